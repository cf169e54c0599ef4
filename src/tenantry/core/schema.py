"""Every table of every domain, gathered for Alembic."""

from tenantry.access import models as _access  # noqa: F401
from tenantry.core import models as _core  # noqa: F401
from tenantry.core.db import Base
from tenantry.platforms import models as _platforms  # noqa: F401

metadata = Base.metadata
