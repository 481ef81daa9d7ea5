import sys

from inferstream.cli import main

sys.exit(main())
