"""``python -m tdnotebooks.bench <command>``: see :mod:`tdnotebooks.bench`."""

from tdnotebooks.bench import main

raise SystemExit(main())
