import sys

from gnn_attention.cli import main

sys.exit(main())
