"""Password rules and the hashing port. Hashing itself is an adapter (bcrypt, in a thread)."""

from __future__ import annotations

from typing import Protocol

from core.errors import InvalidArgument

MIN_LENGTH = 10
MAX_BYTES = 72  # bcrypt reads at most 72 bytes: refuse longer rather than truncate silently

# The most used passwords of public breach corpora (and their obvious variants): refused.
COMMON_PASSWORDS: frozenset[str] = frozenset("""
123456 123456789 12345678 password qwerty123 qwerty1 111111 12345 secret 123123 1234567890
1234567 000000 qwerty abc123 password1 iloveyou 654321 123321 666666 987654321 123456a
1q2w3e4r 1q2w3e4r5t 1qaz2wsx zaq12wsx qwertyuiop 1234qwer qwer1234 asdfghjkl asdf1234
princess dragon monkey football baseball letmein sunshine master welcome shadow superman
michael jennifer trustno1 starwars whatever freedom hello123 charlie donald batman passw0rd
password123 password12 password1234 admin admin123 administrator root toor changeme
welcome1 welcome123 login abcdef abcd1234 abc12345 123abc 11111111 00000000 88888888
12341234 11223344 123qwe 123qweasd qazwsx 1qazxsw2 zxcvbnm zxcvbnm123 asdfgh q1w2e3r4
q1w2e3r4t5 iloveyou1 iloveyou123 lovely loveme fuckyou 7777777 777777 121212 131313
654321a 987654321a pokemon pikachu naruto liverpool chelsea arsenal barcelona realmadrid
computer internet samsung google apple iphone spiderman ironman hunter hunter2 summer
winter spring autumn monday friday january december flower butterfly chocolate cookie
cheese pepper ginger banana orange purple yellow silver golden diamond angel angels
jordan23 jordan michelle jessica ashley daniel thomas robert matthew andrew joshua
qwerty12345 qwerty1234 1234567891 12345678910 password! passw0rd! p@ssw0rd p@ssword
napalmsky napalmsky1 napalmsky123 speeddating dating123 letmein123 trustno1!
""".split())


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password: str, hashed: str) -> bool:
        """True when `password` matches; False for a wrong password or a malformed hash."""
        ...


def check_password(password: str) -> None:
    """Refuse passwords that are too short, too long or too common (InvalidArgument)."""
    if len(password) < MIN_LENGTH:
        raise InvalidArgument(f"password must be at least {MIN_LENGTH} characters")
    if len(password.encode("utf-8")) > MAX_BYTES:
        raise InvalidArgument(f"password must be at most {MAX_BYTES} bytes")
    folded = password.casefold()
    if folded in COMMON_PASSWORDS or folded.rstrip("!?.0123456789") in COMMON_PASSWORDS:
        raise InvalidArgument("password is too common")
