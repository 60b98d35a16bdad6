import sys

from gnn_attention.cli.app import main

sys.exit(main())
