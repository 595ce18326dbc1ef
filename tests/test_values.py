"""The values that cross the process boundary come back from pickle equal, field for field."""

from __future__ import annotations

import pickle
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bulkdl.values import Condition, FileResult, Job, Settings

_ANY = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.tuples(st.text(max_size=3)))
_VALUES = {
    cls: st.builds(cls, **{name: _ANY for name in cls.__dataclass_fields__})
    for cls in (Settings, Condition, FileResult)
}
_JOBS = st.builds(
    Job,
    **{name: _ANY for name in Job.__dataclass_fields__ if name not in ("path", "settings")},
    path=st.builds(Path, st.text(max_size=5)),
    settings=_VALUES[Settings],
)


@given(st.one_of(_JOBS, *_VALUES.values()))
def test_a_value_pickles_to_its_equal(value: object) -> None:
    # The values are of any type in any field, so a field sent in another's place cannot come back equal.
    assert pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) == value
