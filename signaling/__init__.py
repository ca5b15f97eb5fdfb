"""Signaling: WebSocket presence, invites, room lifecycle, chat and the call timer (to come)."""
