"""``python -m idemstore``: the command line (see ``idemstore.cli``)."""

from idemstore.cli import main

raise SystemExit(main())
