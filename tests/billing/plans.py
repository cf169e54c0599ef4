"""Plans the billing tests share: the issue's "standard" plan, as a TOML file would hold it."""

from __future__ import annotations

import tomllib
from typing import Any

STANDARD_TOML = '''
name = "standard"
currency = "GBP"
platform_fee = "50.00"          # per platform per month, prorated by day
[users]                          # price per active end user per month
model = "graduated"
tiers = [ { up_to = 3, price = "30.00" }, { up_to = 30, price = "25.00" },
          { up_to = 300, price = "20.00" }, { price = "15.00" } ]
[terms]                          # commitment term -> discount on the user charge, percent
"1m" = "0"
"3m" = "5"
"12m" = "15"
"36m" = "25"
'''


def standard(**over: Any) -> dict[str, Any]:
    doc = tomllib.loads(STANDARD_TOML)
    for key, value in over.items():
        if key == "model":
            doc["users"]["model"] = value
        else:
            doc[key] = value
    return doc
