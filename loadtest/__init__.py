"""Load tests and demo bots over the public protocol: `napalmsky loadtest`, `napalmsky bots`."""
