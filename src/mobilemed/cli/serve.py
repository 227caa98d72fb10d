"""mobilemed serve MODEL: the web service and upload page for a checkpoint (.pt) or an export (.onnx)."""
from __future__ import annotations

from mobilemed.cli.argtypes import POSITIVE_FLOAT, POSITIVE_INT, port


def add_arguments(parser) -> None:
    parser.add_argument("model", help="best.pt from a run folder, or a .onnx written by `mobilemed export`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=port, default=8000, help="port, 1 to 65535 (default: 8000)")
    parser.add_argument("--max-upload-mb", type=POSITIVE_FLOAT, default=50, help="largest upload accepted (default: 50)")
    parser.add_argument("--workers", type=POSITIVE_INT, default=2, help="model threads (default: 2)")


def run(args) -> int:
    from mobilemed.errors import MissingExtraError
    from mobilemed.service.app import create_app

    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "serve", "the web service") from None
    app = create_app(args.model, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), workers=args.workers)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return 0
