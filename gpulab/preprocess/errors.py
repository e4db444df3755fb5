"""The one exception for bad preprocessing input, naming the argument to fix."""

from __future__ import annotations


class PreprocessError(ValueError):
    """A bad argument (unknown variable, window longer than the data, fractions that do not
    sum to 1, ...). ``field`` names the argument; the message says what would be accepted."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field


def check_positive_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PreprocessError(f"{field} must be a positive integer, not {value!r}", field=field)
    return value


def check_dim(ds, dim: str, field: str = "dim") -> int:
    """The length of ``dim`` in ``ds``; an unknown dimension names the ones there are."""
    if dim not in ds.dims:
        known = ", ".join(map(repr, ds.dims)) or "none"
        raise PreprocessError(f"{field}={dim!r} is not a dimension of the data (its "
                              f"dimensions: {known})", field=field)
    return int(ds.sizes[dim])


def check_variables(ds, variables, field: str = "variables") -> list[str]:
    """The data variables asked for (all of them for ``None``), unknown names refused."""
    known = list(ds.data_vars)
    if variables is None:
        return known
    if isinstance(variables, str):
        variables = [variables]
    names = list(variables)
    for name in names:
        if name not in ds.data_vars:
            raise PreprocessError(f"unknown variable {name!r} in {field}; the data has: "
                                  f"{', '.join(map(repr, known)) or 'no variables'}",
                                  field=field)
    if not names:
        raise PreprocessError(f"{field} is empty: name at least one variable", field=field)
    return names
