"""`python -m tenantry.cli.run ...`: the CLI as a module (`up` starts its children so, with a
heartbeat file each: a child that stops beating is frozen, and `up` restarts it)."""

from tenantry.cli.main import main
from tenantry.core.hang import start_heartbeat

if __name__ == "__main__":
    start_heartbeat()
    main()
