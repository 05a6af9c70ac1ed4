"""`python -m orion_controller`: runs the controller (see `service.main`)."""
from orion_controller.service import main

raise SystemExit(main())
