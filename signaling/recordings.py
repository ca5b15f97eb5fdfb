"""Recorded calls after the fact: store each participant's file when the room closes, list
them for the call's participants and admins by signed URL, delete them on a participant's
request, and fail what a crash left unfinished.

The SFU writes the files on the node hosting the room (sfu.recording); this node uploads them to
the blob store and marks each row ready, or failed with a reason when a file does not play (no
video ever arrived, say). A row is never marked ready for a file that was not checked to play.
"""

from __future__ import annotations

import asyncio
import logging

from core.blobs import BlobStore
from core.ids import RoomId
from core.store import Recording, RecordingStatus, Store
from recorder.mux import inspect_recording
from sfu.recording import RecordedFile

log = logging.getLogger(__name__)

CONTENT_TYPES = {"webm": "video/webm", "matroska": "video/x-matroska"}
SUFFIXES = {"webm": "webm", "matroska": "mkv"}
NOTHING_RECORDED = "nothing was recorded (no media arrived)"
DOES_NOT_PLAY = "the recording could not be finished"


class Recordings:
    """Recorded calls' files and rows (store + blob store)."""

    def __init__(self, store: Store, blobs: BlobStore, node_id: str) -> None:
        self.store, self.blobs, self.node_id = store, blobs, node_id

    async def recover(self) -> int:
        """At start: what this node was recording when it stopped is failed (the files were
        never finished); returns how many."""
        failed = await self.store.recordings.fail_unfinished(self.node_id)
        if failed:
            log.warning("%d recording(s) cut short by a restart marked failed", failed)
        return failed

    async def finish(self, room_id: str, files: list[RecordedFile]) -> None:
        """The room closed: store each participant's file, or fail their row."""
        by_user = {f.user_id: f for f in files}
        for row in await self.store.recordings.for_room(RoomId(room_id)):
            if row.status is not RecordingStatus.RECORDING:
                continue
            recorded = by_user.get(str(row.user_id))
            try:
                await self._finish_one(room_id, row, recorded)
            except Exception:
                log.exception("room %s: storing %s's recording failed", room_id, row.user_id)
                await self.store.recordings.fail(row.recording_id, DOES_NOT_PLAY)
            finally:
                if recorded is not None:
                    recorded.path.unlink(missing_ok=True)

    async def _finish_one(self, room_id: str, row: Recording,
                          recorded: RecordedFile | None) -> None:
        if (recorded is None or recorded.video_frames + recorded.audio_frames == 0
                or not recorded.path.exists()):
            await self.store.recordings.fail(row.recording_id, NOTHING_RECORDED)
            return
        facts = await asyncio.to_thread(inspect_recording, recorded.path)
        if facts is None:
            await self.store.recordings.fail(row.recording_id, DOES_NOT_PLAY)
            return
        key = f"recordings/{room_id}/{row.user_id}.{SUFFIXES[recorded.container]}"
        await self.blobs.put_file(key, recorded.path, CONTENT_TYPES[recorded.container])
        size = recorded.path.stat().st_size
        if not await self.store.recordings.finish(
                row.recording_id, blob_key=key, container=recorded.container,
                video_codec=facts.video_codec, audio_codec=facts.audio_codec,
                duration=facts.duration, size=size):
            await self.blobs.delete(key)  # deleted meanwhile: keep nothing

    async def delete(self, room_id: str) -> int:
        """Remove the call's recordings, rows and files; returns how many rows."""
        rows = await self.store.recordings.delete_room(RoomId(room_id))
        for row in rows:
            if row.blob_key:
                await self.blobs.delete(row.blob_key)
        return len(rows)


__all__ = ["Recordings"]
