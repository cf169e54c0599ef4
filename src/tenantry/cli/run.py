"""`python -m tenantry.cli.run ...`: the CLI as a module (`up` starts its children so)."""

from tenantry.cli.main import main

if __name__ == "__main__":
    main()
