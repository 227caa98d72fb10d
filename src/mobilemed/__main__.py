import sys

from mobilemed.cli.main import main

sys.exit(main())
