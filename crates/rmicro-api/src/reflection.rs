//! A gRPC server reflection client (`grpc.reflection.v1`, then `v1alpha` for older
//! servers): the descriptors of every service a server serves, so the gateway can
//! transcode JSON for servers it has no generated code for (rmicro's and stock
//! gRPC servers alike).
//!
//! Both versions carry the same messages; only the fields the gateway reads are
//! declared (a `oneof` is wire-compatible with optional fields of the same tags).

use futures_util::StreamExt as _;
use prost::Message as _;
use prost_reflect::DescriptorPool;
use rmicro::{CallOptions, Client, Error};
use std::collections::BTreeMap;

const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
const ENDPOINT: &str = "ServerReflection.ServerReflectionInfo";

/// `ServerReflectionRequest`, the two questions the gateway asks.
#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    /// `file_by_filename`: a file by its name (an import the server did not send).
    #[prost(string, optional, tag = "3")]
    file_by_filename: Option<String>,
    /// `file_containing_symbol`: the file defining this symbol, and its imports.
    #[prost(string, optional, tag = "4")]
    file_containing_symbol: Option<String>,
    /// `list_services`: every service the server serves (the value is ignored).
    #[prost(string, optional, tag = "7")]
    list_services: Option<String>,
}

/// `ServerReflectionResponse`, the answers the gateway reads.
#[derive(Clone, PartialEq, prost::Message)]
struct Response {
    #[prost(message, optional, tag = "4")]
    file_descriptor_response: Option<FileDescriptorResponse>,
    #[prost(message, optional, tag = "6")]
    list_services_response: Option<ListServiceResponse>,
    #[prost(message, optional, tag = "7")]
    error_response: Option<ErrorResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorResponse {
    /// Encoded `FileDescriptorProto`s.
    #[prost(bytes = "vec", repeated, tag = "1")]
    file_descriptor_proto: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceResponse {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ErrorResponse {
    #[prost(int32, tag = "1")]
    error_code: i32,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// Services every server has that the gateway never routes to.
pub(crate) fn is_infrastructure(service: &str) -> bool {
    service.starts_with("grpc.reflection.") || service.starts_with("grpc.health.")
}

/// The descriptors of every application service `service` serves, asked of one of
/// its nodes (the selector picks it) by server reflection.
pub(crate) async fn fetch(
    client: &Client,
    service: &str,
    options: &CallOptions,
) -> Result<DescriptorPool, Error> {
    match fetch_with(client, service, V1, options).await {
        // An older server: only v1alpha.
        Err(e) if e.code == 501 || e.code == 404 => {
            fetch_with(client, service, V1ALPHA, options).await
        }
        other => other,
    }
}

async fn fetch_with(
    client: &Client,
    service: &str,
    path: &'static str,
    options: &CallOptions,
) -> Result<DescriptorPool, Error> {
    let names: Vec<String> = ask(
        client,
        service,
        path,
        options,
        vec![Request {
            list_services: Some(String::new()),
            ..Request::default()
        }],
    )
    .await?
    .into_iter()
    .filter_map(|r| r.list_services_response)
    .flat_map(|l| l.service.into_iter().map(|s| s.name))
    .filter(|name| !is_infrastructure(name))
    .collect();
    // Each file decoded (for its name and imports) and as sent: the pool is built
    // from the bytes, which keep the options' extensions (`google.api.http`) that
    // prost's own types drop.
    let mut files: BTreeMap<String, (prost_types::FileDescriptorProto, Vec<u8>)> = BTreeMap::new();
    let mut questions: Vec<Request> = names
        .iter()
        .map(|name| Request {
            file_containing_symbol: Some(name.clone()),
            ..Request::default()
        })
        .collect();
    // Servers differ on whether imports come with a file: ask for any missing by
    // name, a bounded number of rounds (an import chain deeper than that is not a
    // real service's).
    for _ in 0..16 {
        if questions.is_empty() {
            break;
        }
        for answer in ask(client, service, path, options, questions).await? {
            if let Some(error) = answer.error_response {
                return Err(bad_gateway(format!(
                    "`{service}` answered reflection with error {}: {}",
                    error.error_code, error.error_message
                )));
            }
            for bytes in answer
                .file_descriptor_response
                .map(|f| f.file_descriptor_proto)
                .unwrap_or_default()
            {
                let file =
                    prost_types::FileDescriptorProto::decode(bytes.as_slice()).map_err(|e| {
                        bad_gateway(format!(
                            "`{service}` sent a descriptor that does not decode: {e}"
                        ))
                    })?;
                files.insert(file.name().to_owned(), (file, bytes));
            }
        }
        let mut missing: Vec<String> = files
            .values()
            .flat_map(|(f, _)| f.dependency.iter())
            .filter(|d| !files.contains_key(*d))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        questions = missing
            .into_iter()
            .map(|name| Request {
                file_by_filename: Some(name),
                ..Request::default()
            })
            .collect();
    }
    // A FileDescriptorSet is its files, each as field 1.
    let mut set = Vec::new();
    for (_, bytes) in files.values() {
        prost::encoding::bytes::encode(1, bytes, &mut set);
    }
    let mut pool = DescriptorPool::new();
    pool.decode_file_descriptor_set(set.as_slice())
        .map_err(|e| {
            bad_gateway(format!(
                "`{service}`'s descriptors do not fit together: {e}"
            ))
        })?;
    Ok(pool)
}

/// Sends `questions` on one reflection stream and reads as many answers.
async fn ask(
    client: &Client,
    service: &str,
    path: &'static str,
    options: &CallOptions,
    questions: Vec<Request>,
) -> Result<Vec<Response>, Error> {
    let expected = questions.len();
    let mut replies = client
        .streaming::<Request, Response>(
            service,
            path,
            ENDPOINT,
            futures_util::stream::iter(questions),
        )
        .options(options.clone())
        .await?;
    let mut answers = Vec::with_capacity(expected);
    while answers.len() < expected {
        match replies.next().await {
            Some(answer) => answers.push(answer?),
            None => break,
        }
    }
    Ok(answers)
}

/// A 502: the server behind the gateway answered something unusable.
fn bad_gateway(detail: String) -> Error {
    Error::new(crate::ID, 502, detail)
}
