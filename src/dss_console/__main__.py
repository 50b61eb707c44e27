from dss_console.cli import main

raise SystemExit(main())
