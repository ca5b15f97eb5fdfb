import sys

from napalmsky.cli import main

sys.exit(main())
