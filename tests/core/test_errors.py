"""One error tree, its statuses and exit codes in one place, and validation errors by field."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError

from tenantry.access.throttle import TooManyAttempts
from tenantry.core import errors


@pytest.mark.parametrize(("error", "status", "exit_code"), [
    (errors.InvalidInput, 422, 2), (errors.NotFound, 404, 3), (errors.Conflict, 409, 2),
    (errors.NotAllowed, 403, 4), (errors.Unauthenticated, 401, 4),
    (errors.Unavailable, 503, 1), (TooManyAttempts, 429, 4),
])
def test_each_error_carries_its_status_and_exit_code(error: type[errors.TenantryError],
                                                     status: int, exit_code: int) -> None:
    assert (error.status, error.exit_code) == (status, exit_code)
    read_back = errors.error_for_status(status)
    assert issubclass(error, read_back)  # a client maps the answer back to the same tree


class _Form(BaseModel):
    name: str = Field(min_length=2)
    hours: int


def test_field_errors_name_each_field_once() -> None:
    with pytest.raises(ValidationError) as caught:
        _Form.model_validate({"name": "x", "hours": "soon"})
    found = errors.field_errors(caught.value)
    assert set(found) == {"name", "hours"}
    assert "at least 2" in found["name"]


def test_field_errors_read_fastapi_locations_and_formless_errors() -> None:
    assert errors.field_errors([{"loc": ("body", "spec", "size"), "msg": "bad"},
                                {"loc": ("body",), "msg": "not JSON"}]) == {
        "spec.size": "bad", "_form": "not JSON"}
