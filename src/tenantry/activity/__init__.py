"""Jobs and events: what tenantry did and what happened, as people see them."""
