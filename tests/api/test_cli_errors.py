"""The CLI prints an error's message as text: brackets in it are not Rich markup."""

from __future__ import annotations

import pytest

from tenantry.cli.output import fail
from tenantry.core.errors import InvalidInput, NotFound, TenantryError


@pytest.mark.parametrize(("exc", "code", "shown"), [
    (InvalidInput("use s3://BUCKET[/PREFIX]", field="offsite_url"), 2,
     "error (offsite_url): use s3://BUCKET[/PREFIX]"),
    (NotFound("no platform '[bold]x[/bold]'", field="platform"), 3,
     "error (platform): no platform '[bold]x[/bold]'"),
])
def test_error_text_is_printed_as_is(capsys: pytest.CaptureFixture[str], exc: TenantryError,
                                     code: int, shown: str) -> None:
    with pytest.raises(SystemExit) as done:
        fail(exc)
    assert done.value.code == code
    assert capsys.readouterr().err.strip() == shown
