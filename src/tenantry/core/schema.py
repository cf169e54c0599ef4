"""Every table of every domain, gathered for Alembic."""

from tenantry.access import models as _access  # noqa: F401
from tenantry.access.audit import models as _audit  # noqa: F401
from tenantry.access.keys import models as _keys  # noqa: F401
from tenantry.access.ssh import models as _ssh  # noqa: F401
from tenantry.access.support import models as _support  # noqa: F401
from tenantry.core import models as _core  # noqa: F401
from tenantry.core.db import Base
from tenantry.platforms import models as _platforms  # noqa: F401

metadata = Base.metadata
