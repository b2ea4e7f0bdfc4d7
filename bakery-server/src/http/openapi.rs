//! The OpenAPI 3 document of the HTTP API (`GET /api/v1/openapi.json`), built with utoipa from
//! [`OPERATIONS`], the one table of every route the router serves (the integration tests
//! check the router and this table against each other, so they cannot drift apart).

use axum::Json;
use utoipa::ToSchema;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::openapi::{
    ComponentsBuilder, Content, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, RefOr, Required, ResponsesBuilder, Type,
};

/// Who may call a route when a token file is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the status page and its assets (they hold no data), and the cloud-init files
    /// (a Pi has no token; each caller gets only the data of the Pi at its own address).
    Open,
    /// The boot path: open unless `--boot-files-require-token` (Pis cannot send tokens).
    BootPath,
    /// A bearer token; a read-only (`ro:`) one only for reads.
    Token,
}

/// The access rule of `path` (the same rule as `auth.rs` applies).
pub fn access(path: &str) -> Access {
    if path == "/" || path.starts_with("/assets/") || path.starts_with("/cloud-init/") {
        Access::Open
    } else if path.starts_with("/api/v1/files/") {
        Access::BootPath
    } else {
        Access::Token
    }
}

/// The name of the bearer-token security scheme.
const BEARER: &str = "bearerToken";
/// What a 401 means.
const UNAUTHORIZED: &str = "no or a wrong bearer token (only when a token file is configured)";
/// What a read-only token gets on a write.
const READ_ONLY: &str = "a read-only token on a write";
/// What a JSON body over the limit gets.
const JSON_TOO_LARGE: &str = "JSON body over 64 KiB";
/// The content types an upload may name (or leave to the image's first bytes).
const UPLOAD_TYPES: &[(&str, &str)] = &[
    (
        "application/octet-stream",
        "a raw image (also any other type: the first bytes decide)",
    ),
    ("application/gzip", "a gzip-compressed image (.img.gz)"),
    ("application/x-xz", "an xz-compressed image (.img.xz)"),
    ("application/zip", "a zip archive holding one image (.zip)"),
];

/// Every status `o` answers: its table entries plus what the auth layer and the JSON body
/// limit add (401 on guarded routes, 403 for read-only tokens on writes, 413 on JSON bodies).
pub fn statuses(o: &Operation) -> Vec<(u16, String)> {
    let mut out: Vec<(u16, String)> = o
        .statuses
        .iter()
        .map(|(s, m)| (*s, (*m).to_owned()))
        .collect();
    let mut add = |status: u16, meaning: &str| match out.iter_mut().find(|(s, _)| *s == status) {
        Some((_, m)) => {
            m.push_str("; or ");
            m.push_str(meaning);
        }
        None => out.push((status, meaning.to_owned())),
    };
    if matches!(o.request, BodyKind::Json(_) | BodyKind::OptionalJson(_)) {
        add(413, JSON_TOO_LARGE);
    }
    match access(o.path) {
        Access::Open => {}
        Access::BootPath => add(
            401,
            "no or a wrong bearer token (only with --boot-files-require-token)",
        ),
        Access::Token => {
            add(401, UNAUTHORIZED);
            if o.method != "get" {
                add(403, READ_ONLY);
            }
        }
    }
    out.sort_by_key(|(s, _)| *s);
    out
}

/// What an operation takes or returns as its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Nothing.
    None,
    /// JSON: the named `bakery_client` wire type.
    Json(&'static str),
    /// JSON that may be left out (an empty body is the type's default).
    OptionalJson(&'static str),
    /// Raw bytes (`application/octet-stream`).
    Raw,
    /// Text of the given content type.
    Text(&'static str),
}

/// One method on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// `get`, `post`, `put` or `delete`.
    pub method: &'static str,
    /// The path as axum spells it (`/api/v1/files/{pi_id}/{*path}`).
    pub path: &'static str,
    /// A one-line summary.
    pub summary: &'static str,
    /// The request body.
    pub request: BodyKind,
    /// The body of the success reply.
    pub reply: BodyKind,
    /// The statuses it answers, with what each means.
    pub statuses: &'static [(u16, &'static str)],
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: BodyKind,
    reply: BodyKind,
    statuses: &'static [(u16, &'static str)],
) -> Operation {
    Operation {
        method,
        path,
        summary,
        request,
        reply,
        statuses,
    }
}

use BodyKind::{Json as J, None as N, OptionalJson as OJ, Raw, Text};

const OK: (u16, &str) = (200, "done");
const BAD: (u16, &str) = (400, "invalid name, path or body");
const NO_PI: (u16, &str) = (404, "unknown Pi");

/// Every route the server serves (one line each: a table).
#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    op("get", "/", "The status page (HTML)", N, Text("text/html"), &[(200, "the page")]),
    op("get", "/assets/{file}", "A status page asset (JS, CSS)", N, Text("text/plain"), &[(200, "the asset"), (404, "no such asset")]),
    op("get", "/cloud-init/{file}", "A cloud-init NoCloud file of the baked Pi that network-booted from the caller's address (`ds=nocloud;s={{nocloud_url}}`); no token, nothing by serial", N, Text("text/plain"), &[(200, "the file"), BAD, (404, "no baked Pi booted from this address, or no network-config set")]),
    op("get", "/metrics", "Prometheus metrics (text exposition format)", N, Text("text/plain"), &[(200, "the metrics")]),
    op("get", "/api/v1/openapi.json", "This document", N, J("OpenAPI"), &[(200, "the document")]),
    op("get", "/api/v1/files/{name}", "A root-level boot file (e.g. bootcode.bin)", N, Raw, &[(200, "the file"), (404, "no such file"), BAD]),
    op("get", "/api/v1/files/{pi_id}/{*path}", "A boot file of a Pi (what HookTFTP forwards); registers unknown Pis", N, Raw, &[(200, "the file"), (404, "no such file, or the Pi may not boot"), BAD]),
    op("get", "/api/v1/fridge", "Pis in the fridge", N, J("PiMap"), &[OK]),
    op("post", "/api/v1/fridge", "Bake a free Pi from a bakeform; `model` and `labels` restrict which Pi is taken", J("BakeRequest"), J("PiInfo"), &[(202, "baking (status 3)"), (400, "unknown or unready bakeform, bad constraints"), (404, "no available Pi found (matching the constraints)"), (507, "the root would take the data dir below --min-free-space")]),
    op("get", "/api/v1/oven", "Pis in the oven", N, J("PiMap"), &[OK]),
    op("get", "/api/v1/oven/{pi_id}", "Any known Pi, a fridge Pi too (status 1, as the first Go server answered); `?wait=baked&timeout=<s>` long-polls", N, J("PiInfo"), &[OK, (404, "unknown Pi"), (409, "the bake failed")]),
    op("delete", "/api/v1/oven/{pi_id}", "Unbake a Pi", N, N, &[OK, (403, "not baked"), NO_PI]),
    op("post", "/api/v1/oven/{pi_id}/powercycle", "Power a baked Pi off and on", N, N, &[OK, (403, "not baked"), NO_PI, (502, "the PPI failed")]),
    op("post", "/api/v1/oven/{pi_id}/reset", "Re-clone a baked Pi's root from its bakeform", N, J("PiInfo"), &[(202, "resetting"), (403, "not baked"), NO_PI, (507, "the new root would take the data dir below --min-free-space")]),
    op("put", "/api/v1/pis/{pi_id}/labels", "Replace a Pi's labels (a map of key to value, matched by a bake's `labels`)", J("Labels"), J("PiInfo"), &[OK, BAD, NO_PI]),
    op("post", "/api/v1/pis/{pi_id}/power/status", "Ask the PPI now for a Pi's power state (`status` action); the Pi with `powerState` and `powerStateAt` (a PPI that cannot tell: `unknown`, or the state learnt before)", N, J("PiInfo"), &[OK, BAD, NO_PI]),
    op("put", "/api/v1/oven/{pi_id}/metadata", "Replace a Pi's metadata", J("Metadata"), J("PiInfo"), &[OK, BAD, NO_PI]),
    op("get", "/api/v1/oven/{pi_id}/cloud-init/{file}", "What a Pi in the oven is served for a cloud-init file (meta-data, user-data, vendor-data, network-config): its operator's, else the default", N, Text("text/plain"), &[OK, BAD, (404, "unknown Pi, not in the oven, or no network-config set")]),
    op("put", "/api/v1/oven/{pi_id}/cloud-init/{file}", "Set a cloud-init file of a Pi in the oven (the raw file, at most 256 KiB); deleted when the Pi is unbaked", Text("text/plain"), N, &[OK, BAD, (403, "in the fridge"), NO_PI, (413, "larger than 256 KiB")]),
    op("delete", "/api/v1/oven/{pi_id}/cloud-init/{file}", "Remove a cloud-init file of a Pi in the oven (the default is served again)", N, N, &[OK, BAD, (403, "in the fridge"), NO_PI]),
    op("get", "/api/v1/oven/{pi_id}/boots", "Boot timeline of a Pi in the oven, newest boot first", N, J("BootList"), &[OK, NO_PI]),
    op("post", "/api/v1/oven/{pi_id}/disks", "Attach a disk", J("AttachDiskRequest"), N, &[OK, (404, "unknown Pi or disk"), (409, "attached elsewhere")]),
    op("delete", "/api/v1/oven/{pi_id}/disks/{disk_id}", "Detach a disk", N, N, &[OK, (403, "the root disk"), (404, "unknown Pi or disk")]),
    op("post", "/api/v1/oven/{pi_id}/upload/{filename}", "Put a file into the Pi's piConfig/", Raw, N, &[OK, BAD, NO_PI]),
    op("get", "/api/v1/oven/{pi_id}/download/{filename}", "Get a file from the Pi's piConfig/", N, Raw, &[OK, (404, "unknown Pi or file")]),
    op("get", "/api/v1/pis", "Every known Pi", N, J("PiMap"), &[OK]),
    op("get", "/api/v1/pis/{pi_id}", "Any known Pi", N, J("PiInfo"), &[OK, (404, "unknown Pi")]),
    op("get", "/api/v1/pis/{pi_id}/boots", "Boot timeline of any known Pi, newest boot first", N, J("BootList"), &[OK, (404, "unknown Pi")]),
    op("get", "/api/v1/bakeforms", "Every bakeform", N, J("BakeformMap"), &[OK]),
    op("get", "/api/v1/bakeforms/{name}", "One bakeform with its import state", N, J("Bakeform"), &[OK, (404, "unknown bakeform")]),
    op("post", "/api/v1/bakeforms/{name}", "Upload an SD-card image (raw, .img.gz, .img.xz or .zip) as a bakeform", Raw, J("Bakeform"), &[(201, "imported"), (400, "invalid name, bad image or corrupt archive"), (403, "exists"), (408, "upload stalled (--upload-idle-timeout)"), (413, "too large"), (503, "too many uploads at once (Retry-After)"), (507, "the image would take the data dir below --min-free-space")]),
    op("delete", "/api/v1/bakeforms/{name}", "Delete a bakeform", N, N, &[OK, (404, "unknown bakeform"), (409, "used by a baked Pi")]),
    op("get", "/api/v1/disks", "Every disk", N, J("DiskList"), &[OK]),
    op("post", "/api/v1/disks", "Create a disk", J("CreateDiskRequest"), J("Disk"), &[(201, "created"), (400, "size <= 0"), (507, "the disk would overcommit the data dir (promised, free and needed named)")]),
    op("get", "/api/v1/disks/{disk_id}", "One disk", N, J("Disk"), &[OK, (404, "unknown disk")]),
    op("delete", "/api/v1/disks/{disk_id}", "Delete a disk (unknown ones too)", N, N, &[OK, (409, "attached")]),
    op("post", "/api/v1/disks/{disk_id}/resize", "Grow a disk", J("ResizeDiskRequest"), J("Disk"), &[OK, BAD, (404, "unknown disk"), (409, "attached"), (507, "the growth would overcommit the data dir")]),
    op("put", "/api/v1/disks/{disk_id}/metadata", "Replace a disk's metadata", J("Metadata"), J("Disk"), &[OK, BAD, (404, "unknown disk")]),
    op("post", "/api/v1/disks/{disk_id}/snapshots", "Take a snapshot of a data disk (attached ones too: crash-consistent); a reflink of disk.img on btrfs/XFS, a sparse copy elsewhere; the body may be left out", OJ("CreateSnapshotRequest"), J("Snapshot"), &[(201, "taken"), BAD, (403, "a Pi's root disk"), (404, "unknown disk"), (507, "the copy would overcommit the data dir")]),
    op("get", "/api/v1/disks/{disk_id}/snapshots", "A disk's snapshots, oldest first", N, J("SnapshotList"), &[OK, BAD, (404, "unknown disk")]),
    op("post", "/api/v1/disks/{disk_id}/restore", "Replace a detached disk's image with a copy of one of its snapshots (atomic rename); the disk takes the snapshot's size", J("RestoreDiskRequest"), J("Disk"), &[OK, BAD, (404, "unknown disk or snapshot, or a snapshot of another disk"), (409, "attached"), (507, "the copy would overcommit the data dir")]),
    op("get", "/api/v1/snapshots/{snapshot_id}", "One snapshot", N, J("Snapshot"), &[OK, BAD, (404, "unknown snapshot")]),
    op("delete", "/api/v1/snapshots/{snapshot_id}", "Delete a snapshot", N, N, &[OK, BAD, (404, "unknown snapshot")]),
    op("get", "/api/v1/events", "Events after `since` (`?since=<id>&limit=<n>`), oldest first", N, J("EventList"), &[OK, BAD]),
    op("get", "/api/v1/events/stream", "Live events as Server-Sent Events; resumes after `Last-Event-ID` or `?since=`", N, Text("text/event-stream"), &[OK]),
];

/// Optional query parameters and headers: method, path, where, name, type, meaning.
type OptionalParameter = (
    &'static str,
    &'static str,
    ParameterIn,
    &'static str,
    Type,
    &'static str,
);

/// The optional query parameters and headers of the routes that take any.
#[rustfmt::skip]
const OPTIONAL_PARAMETERS: &[OptionalParameter] = &[
    ("get", "/api/v1/oven/{pi_id}", ParameterIn::Query, "wait", Type::String, "`baked`: long-poll until the Pi is baked (or its bake failed)"),
    ("get", "/api/v1/oven/{pi_id}", ParameterIn::Query, "timeout", Type::Integer, "seconds a long-poll waits (default 60, at most 600)"),
    ("get", "/api/v1/events", ParameterIn::Query, "since", Type::Integer, "only events with a larger id (default 0)"),
    ("get", "/api/v1/events", ParameterIn::Query, "limit", Type::Integer, "at most this many events (default and maximum 1000)"),
    ("get", "/api/v1/events/stream", ParameterIn::Query, "since", Type::Integer, "replay the events after this id first"),
    ("get", "/api/v1/events/stream", ParameterIn::Header, "Last-Event-ID", Type::Integer, "resume after this event id (wins over `since`)"),
];

/// The OpenAPI form of an axum path: `{*rest}` becomes `{rest}`.
pub fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

fn method_of(name: &str) -> HttpMethod {
    match name {
        "post" => HttpMethod::Post,
        "put" => HttpMethod::Put,
        "delete" => HttpMethod::Delete,
        "patch" => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

/// The schema of a JSON body named in the table: a reference to the wire type's component,
/// a map of them, or free-form.
fn json_schema(name: &str) -> RefOr<Schema> {
    let map_of = |item: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(Ref::from_schema_name(item)))
            .into()
    };
    match name {
        "PiMap" => map_of("PiInfo"),
        "BakeformMap" => map_of("Bakeform"),
        "Metadata" | "Labels" | "OpenAPI" => ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(name))
            .into(),
        component => Ref::from_schema_name(component).into(),
    }
}

fn content(kind: BodyKind) -> Option<(&'static str, Content)> {
    let string = |format: Option<utoipa::openapi::SchemaFormat>| {
        Content::new(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(format)
                .build(),
        ))
    };
    match kind {
        BodyKind::None => None,
        BodyKind::Json(name) | BodyKind::OptionalJson(name) => {
            Some(("application/json", Content::new(Some(json_schema(name)))))
        }
        BodyKind::Raw => Some((
            "application/octet-stream",
            string(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            ))),
        )),
        BodyKind::Text(content_type) => Some((content_type, string(None))),
    }
}

/// The component schemas: every wire type of `bakery_client` the table names, with the
/// types they contain, derived from the types themselves (utoipa reads their serde names).
fn components() -> utoipa::openapi::Components {
    fn add<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
        out.push((T::name().into_owned(), T::schema()));
        T::schemas(out);
    }
    let mut schemas = Vec::new();
    add::<bakery_client::PiInfo>(&mut schemas);
    add::<bakery_client::Bakeform>(&mut schemas);
    add::<bakery_client::BakeRequest>(&mut schemas);
    add::<bakery_client::AttachDiskRequest>(&mut schemas);
    add::<bakery_client::CreateDiskRequest>(&mut schemas);
    add::<bakery_client::ResizeDiskRequest>(&mut schemas);
    add::<bakery_client::Disk>(&mut schemas);
    add::<bakery_client::DiskList>(&mut schemas);
    add::<bakery_client::Snapshot>(&mut schemas);
    add::<bakery_client::SnapshotList>(&mut schemas);
    add::<bakery_client::CreateSnapshotRequest>(&mut schemas);
    add::<bakery_client::RestoreDiskRequest>(&mut schemas);
    add::<bakery_client::BootList>(&mut schemas);
    add::<bakery_client::EventList>(&mut schemas);
    add::<bakery_client::ErrorBody>(&mut schemas);
    ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            BEARER,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        )
        .build()
}

fn operation(o: &Operation) -> utoipa::openapi::path::Operation {
    let mut responses = ResponsesBuilder::new();
    for (i, (status, meaning)) in statuses(o).iter().enumerate() {
        let mut response = ResponseBuilder::new().description(meaning.as_str());
        if i == 0 {
            if let Some((content_type, body)) = content(o.reply) {
                response = response.content(content_type, body);
            }
        } else {
            response = response.content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            );
        }
        responses = responses.response(status.to_string(), response.build());
    }
    let parameters: Vec<_> = openapi_path(o.path)
        .split('/')
        .filter_map(|segment| {
            segment
                .strip_prefix('{')?
                .strip_suffix('}')
                .map(str::to_owned)
        })
        .map(|name| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
                .build()
        })
        .chain(
            OPTIONAL_PARAMETERS
                .iter()
                .filter(|(method, path, ..)| *method == o.method && *path == o.path)
                .map(|(_, _, place, name, kind, description)| {
                    ParameterBuilder::new()
                        .name(*name)
                        .parameter_in(place.clone())
                        .required(Required::False)
                        .description(Some(*description))
                        .schema(Some(ObjectBuilder::new().schema_type(kind.clone()).build()))
                        .build()
                }),
        )
        .collect();
    let mut builder = OperationBuilder::new()
        .summary(Some(o.summary))
        .operation_id(Some(format!(
            "{}{}",
            o.method,
            o.path.replace(['/', '{', '}', '*', '.'], "_")
        )))
        .parameters(Some(parameters))
        .responses(responses.build());
    if o.path == "/api/v1/bakeforms/{name}" && o.method == "post" {
        let mut body = RequestBodyBuilder::new()
            .required(Some(Required::True))
            .description(Some(
                "the SD-card image; compressed ones are decoded while they stream",
            ));
        for (content_type, meaning) in UPLOAD_TYPES {
            let schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Binary,
                )))
                .description(Some(*meaning))
                .build();
            body = body.content(*content_type, Content::new(Some(schema)));
        }
        builder = builder.request_body(Some(body.build()));
    } else if let Some((content_type, body)) = content(o.request) {
        builder = builder.request_body(Some(
            RequestBodyBuilder::new()
                .content(content_type, body)
                .required(Some(if matches!(o.request, BodyKind::OptionalJson(_)) {
                    Required::False
                } else {
                    Required::True
                }))
                .build(),
        ));
    }
    match access(o.path) {
        Access::Open => builder = builder.security(SecurityRequirement::default()),
        Access::BootPath => {
            builder = builder
                .security(SecurityRequirement::default())
                .security(SecurityRequirement::new(BEARER, Vec::<String>::new()));
        }
        Access::Token => {}
    }
    builder.build()
}

/// The OpenAPI 3 document of every route in [`OPERATIONS`].
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for o in OPERATIONS {
        paths = paths.path(
            openapi_path(o.path),
            PathItem::new(method_of(o.method), operation(o)),
        );
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("bakery")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Pi-as-a-Service: bake Raspberry Pis from bakeforms, attach disks, watch \
                     them boot. Every error reply is `{\"error\": \"<message>\"}`. With a token \
                     file configured, /api and /metrics need `Authorization: Bearer <token>` \
                     (a read-only token for reads only); the status page is open, the boot \
                     path (/api/v1/files) is open unless --boot-files-require-token.",
                ))
                .build(),
        )
        .servers(Some([Server::new("/")]))
        .paths(paths.build())
        .components(Some(components()))
        .security(Some([SecurityRequirement::new(
            BEARER,
            Vec::<String>::new(),
        )]))
        .build()
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Json<OpenApi> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_in_the_document_once() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut count = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "post", "put", "delete", "patch"] {
                if item.get(method).is_some() {
                    count += 1;
                    assert!(
                        OPERATIONS
                            .iter()
                            .any(|o| o.method == method && openapi_path(o.path) == *path),
                        "{method} {path}"
                    );
                }
            }
        }
        assert_eq!(count, OPERATIONS.len());
        let events = &doc["paths"]["/api/v1/events"]["get"]["parameters"];
        let names: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["since", "limit"], "{events}");
        for (method, path, ..) in OPTIONAL_PARAMETERS {
            assert!(
                OPERATIONS
                    .iter()
                    .any(|o| o.method == *method && o.path == *path),
                "{method} {path} takes parameters but is no operation"
            );
        }
        let wildcard = &doc["paths"]["/api/v1/files/{pi_id}/{path}"]["get"]["parameters"];
        assert_eq!(wildcard.as_array().unwrap().len(), 2, "{wildcard}");
    }

    fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_owned()),
                        _ => refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_schemas_use_the_wire_names() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 30, "{found:?}");
        for r in &found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} does not resolve"
            );
        }
        let pi = &doc["components"]["schemas"]["PiInfo"];
        let props = pi["properties"].as_object().unwrap();
        for key in [
            "id",
            "status",
            "disks",
            "sourceBakeform",
            "lastBoot",
            "lastError",
        ] {
            assert!(props.contains_key(key), "PiInfo.{key} missing: {pi}");
        }
        assert_eq!(pi["required"], serde_json::json!(["id", "status"]), "{pi}");
        let status = &doc["components"]["schemas"]["PiStatus"];
        assert_eq!(status["enum"], serde_json::json!([1, 2, 3]), "{status}");
        let outcome = &doc["components"]["schemas"]["BootOutcome"];
        assert!(outcome.to_string().contains("notFound"), "{outcome}");
        // Error bodies document their code, every kind by its wire name.
        let kinds = doc["components"]["schemas"]["ErrorKind"].to_string();
        for kind in bakery_client::ErrorKind::ALL {
            assert!(
                kinds.contains(&format!("\"{kind}\"")),
                "{kind} missing: {kinds}"
            );
        }
        let body = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(body["required"], serde_json::json!(["error"]), "{body}");
    }
}
