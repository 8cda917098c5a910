"""What the files connector can do."""

from connectors.base import Capabilities

CAPABILITIES = Capabilities(
    name="files",
    # Publishing is atomic (rename), but there is no transaction to hold a watermark in.
    transactional=False,
    load_modes=("replace", "append"),
    sqlglot_dialect=None,
    streaming=True,
)
