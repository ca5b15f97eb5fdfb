"""bcrypt password hashing, off the event loop."""

from __future__ import annotations

import asyncio

import bcrypt


class BcryptHasher:
    def __init__(self, rounds: int = 12) -> None:
        if not 4 <= rounds <= 31:
            raise ValueError("bcrypt rounds must be between 4 and 31")
        self.rounds = rounds

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash, password)

    def _hash(self, password: str) -> str:
        return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(self.rounds)).decode()

    async def verify(self, password: str, hashed: str) -> bool:
        return await asyncio.to_thread(self._verify, password, hashed)

    @staticmethod
    def _verify(password: str, hashed: str) -> bool:
        try:
            return bcrypt.checkpw(password.encode("utf-8"), hashed.encode("ascii"))
        except ValueError:
            return False
