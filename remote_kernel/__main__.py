import sys

from remote_kernel.cli import main

sys.exit(main())
