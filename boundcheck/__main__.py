from boundcheck.cli import main

raise SystemExit(main())
