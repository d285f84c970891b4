from tlsproxy.cli import main

raise SystemExit(main())
