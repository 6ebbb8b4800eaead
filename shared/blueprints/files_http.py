"""Files, as OpenAI serves them: /v1/files (upload, list), /v1/files/{file_id} (get, delete) and
/v1/files/{file_id}/content (download, streamed)."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from shared.blueprints._contract import BYTES, Operation, Param, Reply, page_params
from shared.blueprints._http import RequestContext, declared_length, endpoint, json_response, query_int
from shared.blueprints._multipart import MultipartUpload
from shared.errors import InvalidRequestError, PayloadTooLargeError
from shared.models.common import Deleted
from shared.models.files import FileCreate, FileListPublic, FilePublic

bp = func.Blueprint()


@bp.route(route="v1/files", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Upload a file (multipart)", body=FileCreate, form_file="file", returns={200: FilePublic}
    )
)
async def upload_file(req: Request, ctx: RequestContext) -> Response:
    limit = ctx.container.settings.max_upload_bytes
    if declared_length(req) > limit:
        raise PayloadTooLargeError(f"The upload is larger than the {limit}-byte limit.")
    upload = MultipartUpload(req.stream(), req.headers.get("content-type", ""), max_bytes=limit)
    if not await upload.until_file():
        raise InvalidRequestError("Missing required parameter: 'file'.", param="file")
    stored = await ctx.container.files.create(
        ctx.principal,
        filename=upload.filename or "upload",
        purpose=lambda: upload.fields.get("purpose"),  # the form may send it after the file
        content=upload.file_chunks(),
        content_type=upload.file_content_type,
    )
    return json_response(stored.model_dump(mode="json", exclude_none=True))


@bp.route(route="v1/files", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "The caller's files",
        params=(
            *page_params(10_000, 10_000),
            Param.text(
                "order", "Newest first (`desc`) or oldest first.", enum=["asc", "desc"], default="desc"
            ),
            Param.text("purpose", "Only files of this purpose."),
        ),
        returns={200: FileListPublic},
    )
)
async def list_files(req: Request, ctx: RequestContext) -> Response:
    order = req.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError("'order' must be 'asc' or 'desc'.", param="order")
    page = await ctx.container.files.list_page(
        ctx.principal,
        limit=query_int(req, "limit", 10_000, low=1, high=10_000),
        after=req.query_params.get("after"),
        order=order,
        purpose=req.query_params.get("purpose"),
    )
    # Files leave out fields they lack, as OpenAI's do; an empty page's ids are null, not absent.
    body = page.model_dump(mode="json", exclude_none=True)
    return json_response({"first_id": None, "last_id": None, **body})


@bp.route(route="v1/files/{file_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("A file's metadata", returns={200: FilePublic}))
async def get_file(req: Request, ctx: RequestContext) -> Response:
    stored = await ctx.container.files.get(ctx.principal, req.path_params["file_id"])
    return json_response(stored.model_dump(mode="json", exclude_none=True))


@bp.route(route="v1/files/{file_id}/content", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("A file's bytes", returns={200: Reply(BYTES, media="application/octet-stream")}))
async def file_content(req: Request, ctx: RequestContext) -> Response:
    chunks = await ctx.container.files.content(ctx.principal, req.path_params["file_id"])
    return StreamingResponse(chunks, media_type="application/octet-stream")


@bp.route(route="v1/files/{file_id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("Delete a file", returns={200: Deleted}))
async def delete_file(req: Request, ctx: RequestContext) -> Response:
    return json_response(await ctx.container.files.delete(ctx.principal, req.path_params["file_id"]))
