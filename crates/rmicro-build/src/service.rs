//! Generates, per gRPC service: the handler trait, the `*Server` adapter, the typed
//! `*Client`, and the service descriptor with its registry endpoints.

use crate::endpoints::{Messages, ValueDesc};
use heck::{ToShoutySnakeCase, ToSnakeCase};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use std::collections::HashSet;
use std::path::Path;

/// prost-build's hook: called once per service of every package.
pub(crate) struct Generator {
    messages: Messages,
    fds_path: String,
    packages_with_fds: HashSet<String>,
}

impl Generator {
    pub(crate) fn new(fds: &prost_types::FileDescriptorSet, fds_path: &Path) -> Self {
        Generator {
            messages: Messages::new(fds),
            fds_path: fds_path.display().to_string(),
            packages_with_fds: HashSet::new(),
        }
    }
}

fn rust_type(path: &str) -> TokenStream {
    syn::parse_str::<syn::Type>(path)
        .map(|t| quote!(#t))
        .unwrap_or_else(|_| {
            let ident = format_ident!("{}", path);
            quote!(#ident)
        })
}

fn value_tokens(v: &ValueDesc) -> TokenStream {
    let name = &v.name;
    let kind = &v.kind;
    let values = v.values.iter().map(value_tokens);
    quote!(::rmicro::registry::Value::new(#name, #kind, vec![#(#values),*]))
}

fn doc_lines(comments: &prost_build::Comments) -> Vec<String> {
    comments
        .leading
        .iter()
        .flat_map(|c| c.lines().map(|l| l.trim().to_owned()).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect()
}

impl prost_build::ServiceGenerator for Generator {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let mut out = TokenStream::new();
        if self.packages_with_fds.insert(service.package.clone()) {
            let path = &self.fds_path;
            out.extend(quote! {
                /// The encoded `FileDescriptorSet` of the `.proto` files this module came from.
                pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(#path);
            });
        }
        out.extend(self.service(&service));
        let file: syn::File = match syn::parse2(out) {
            Ok(f) => f,
            Err(e) => panic!(
                "rmicro-build generated invalid Rust for {}: {e}",
                service.proto_name
            ),
        };
        buf.push_str(&prettyplease::unparse(&file));
    }
}

struct MethodGen {
    index: usize,
    fn_name: syn::Ident,
    proto_name: String,
    endpoint: String,
    path: String,
    input: TokenStream,
    output: TokenStream,
    input_proto: String,
    output_proto: String,
    client_streaming: bool,
    server_streaming: bool,
    docs: Vec<String>,
}

impl Generator {
    fn service(&self, service: &prost_build::Service) -> TokenStream {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let short_name = &service.proto_name;
        let trait_name = format_ident!("{}", service.name);
        let server_name = format_ident!("{}Server", service.name);
        let client_name = format_ident!("{}Client", service.name);
        let descriptor_name = format_ident!("{}_DESCRIPTOR", service.name.to_shouty_snake_case());
        let endpoints_fn = format_ident!("{}_endpoints", service.name.to_snake_case());
        let methods: Vec<MethodGen> = service
            .methods
            .iter()
            .enumerate()
            .map(|(index, m)| MethodGen {
                index,
                fn_name: format_ident!("{}", m.name),
                proto_name: m.proto_name.clone(),
                endpoint: format!("{short_name}.{}", m.proto_name),
                path: format!("/{full_name}/{}", m.proto_name),
                input: rust_type(&m.input_type),
                output: rust_type(&m.output_type),
                input_proto: m.input_proto_type.trim_start_matches('.').to_owned(),
                output_proto: m.output_proto_type.trim_start_matches('.').to_owned(),
                client_streaming: m.client_streaming,
                server_streaming: m.server_streaming,
                docs: doc_lines(&m.comments),
            })
            .collect();

        let service_docs = doc_lines(&service.comments);
        let trait_methods = methods.iter().map(trait_method);
        let dispatch_arms = methods.iter().map(dispatch_arm);
        let client_methods = methods.iter().map(client_method);
        let method_descriptors = methods.iter().map(|m| {
            let (name, endpoint, path) = (&m.proto_name, &m.endpoint, &m.path);
            let (input, output) = (&m.input_proto, &m.output_proto);
            let kind = match (m.client_streaming, m.server_streaming) {
                (false, false) => quote!(Unary),
                (false, true) => quote!(ServerStreaming),
                (true, false) => quote!(ClientStreaming),
                (true, true) => quote!(Streaming),
            };
            quote! {
                ::rmicro::server::MethodDescriptor {
                    name: #name,
                    endpoint: #endpoint,
                    path: #path,
                    kind: ::rmicro::server::MethodKind::#kind,
                    input_type: #input,
                    output_type: #output,
                }
            }
        });
        let endpoints = methods.iter().map(|m| {
            let name = &m.endpoint;
            let request = value_tokens(&self.messages.describe(&format!(".{}", m.input_proto)));
            let response = value_tokens(&self.messages.describe(&format!(".{}", m.output_proto)));
            let stream = if m.client_streaming || m.server_streaming {
                "true"
            } else {
                "false"
            };
            quote! {
                ::rmicro::registry::Endpoint {
                    name: #name.to_owned(),
                    request: Some(#request),
                    response: Some(#response),
                    metadata: [("stream".to_owned(), #stream.to_owned())].into_iter().collect(),
                }
            }
        });
        let trait_doc = format!(
            "Handlers of `{full_name}`: implement this and serve it with [`{server_name}`]."
        );
        let server_doc = format!(
            "Serves a [`{trait_name}`] implementation: pass it to the service builder's `.handle(..)`."
        );
        let client_doc = format!("Typed client of `{full_name}`.");
        let descriptor_doc =
            format!("Description of `{full_name}`: methods, descriptors, registry endpoints.");

        quote! {
            #[doc = #trait_doc]
            #(#[doc = #service_docs])*
            pub trait #trait_name: Send + Sync + 'static {
                #(#trait_methods)*
            }

            #[doc = #descriptor_doc]
            pub static #descriptor_name: ::rmicro::server::ServiceDescriptor = ::rmicro::server::ServiceDescriptor {
                name: #full_name,
                short_name: #short_name,
                methods: &[#(#method_descriptors),*],
                file_descriptor_set: FILE_DESCRIPTOR_SET,
                endpoints: #endpoints_fn,
            };

            fn #endpoints_fn() -> Vec<::rmicro::registry::Endpoint> {
                vec![#(#endpoints),*]
            }

            #[doc = #server_doc]
            pub struct #server_name<T> {
                inner: ::std::sync::Arc<T>,
            }

            impl<T: #trait_name> #server_name<T> {
                /// Wraps a handler.
                pub fn new(handler: T) -> Self {
                    Self { inner: ::std::sync::Arc::new(handler) }
                }

                /// Wraps a handler that is shared with other code.
                pub fn from_arc(handler: ::std::sync::Arc<T>) -> Self {
                    Self { inner: handler }
                }
            }

            impl<T: #trait_name> ::rmicro::server::ServiceHandler for #server_name<T> {
                fn descriptor(&self) -> &'static ::rmicro::server::ServiceDescriptor {
                    &#descriptor_name
                }

                fn call(
                    &self,
                    method: usize,
                    env: ::rmicro::__codegen::dispatch::CallEnv,
                    request: ::rmicro::__codegen::http::Request<::rmicro::transport::Body>,
                ) -> ::rmicro::__codegen::BoxFuture<'static, ::rmicro::__codegen::http::Response<::rmicro::transport::Body>> {
                    let inner = self.inner.clone();
                    match method {
                        #(#dispatch_arms)*
                        _ => Box::pin(::rmicro::__codegen::dispatch::unknown_method(#full_name, method)),
                    }
                }
            }

            #[doc = #client_doc]
            #[derive(Debug, Clone)]
            pub struct #client_name {
                client: ::rmicro::Client,
                service: ::std::string::String,
            }

            impl #client_name {
                /// Calls the service named `service` (e.g. `greeter`) through `client`.
                pub fn new(service: impl Into<::std::string::String>, client: ::rmicro::Client) -> Self {
                    Self { client, service: service.into() }
                }

                #(#client_methods)*
            }
        }
    }
}

fn trait_method(m: &MethodGen) -> TokenStream {
    let (name, input, output) = (&m.fn_name, &m.input, &m.output);
    let docs = if m.docs.is_empty() {
        vec![format!("Handles `{}`.", m.endpoint)]
    } else {
        m.docs.clone()
    };
    let request = if m.client_streaming {
        quote!(::rmicro::Request<::rmicro::RequestStream<#input>>)
    } else {
        quote!(::rmicro::Request<#input>)
    };
    if m.server_streaming {
        quote! {
            #(#[doc = #docs])*
            fn #name(
                &self,
                request: #request,
                replies: ::rmicro::ResponseSender<#output>,
            ) -> impl ::std::future::Future<Output = ::std::result::Result<(), ::rmicro::Error>> + Send;
        }
    } else {
        quote! {
            #(#[doc = #docs])*
            fn #name(
                &self,
                request: #request,
            ) -> impl ::std::future::Future<Output = ::std::result::Result<#output, ::rmicro::Error>> + Send;
        }
    }
}

fn dispatch_arm(m: &MethodGen) -> TokenStream {
    let (index, name) = (m.index, &m.fn_name);
    let dispatch = quote!(::rmicro::__codegen::dispatch);
    match (m.client_streaming, m.server_streaming) {
        (false, false) => quote! {
            #index => Box::pin(#dispatch::unary(env, request, move |r| async move { inner.#name(r).await })),
        },
        (true, false) => quote! {
            #index => Box::pin(#dispatch::client_streaming(env, request, move |r| async move { inner.#name(r).await })),
        },
        (false, true) => quote! {
            #index => Box::pin(#dispatch::server_streaming(env, request, move |r, tx| async move { inner.#name(r, tx).await })),
        },
        (true, true) => quote! {
            #index => Box::pin(#dispatch::streaming(env, request, move |r, tx| async move { inner.#name(r, tx).await })),
        },
    }
}

fn client_method(m: &MethodGen) -> TokenStream {
    let (name, input, output) = (&m.fn_name, &m.input, &m.output);
    let (path, endpoint) = (&m.path, &m.endpoint);
    let doc =
        format!("Calls `{endpoint}`; adjust the call (timeout, metadata, …) before awaiting it.");
    match (m.client_streaming, m.server_streaming) {
        (false, false) => quote! {
            #[doc = #doc]
            pub fn #name(&self, request: #input) -> ::rmicro::client::UnaryCall<#output> {
                self.client.unary(&self.service, #path, #endpoint, &request)
            }
        },
        (false, true) => quote! {
            #[doc = #doc]
            pub fn #name(&self, request: #input) -> ::rmicro::client::ServerStreamCall<#output> {
                self.client.server_streaming(&self.service, #path, #endpoint, &request)
            }
        },
        (true, false) => quote! {
            #[doc = #doc]
            pub fn #name(
                &self,
                requests: impl ::rmicro::__codegen::Stream<Item = #input> + Send + 'static,
            ) -> ::rmicro::client::ClientStreamCall<#output> {
                self.client.client_streaming(&self.service, #path, #endpoint, requests)
            }
        },
        (true, true) => quote! {
            #[doc = #doc]
            pub fn #name(
                &self,
                requests: impl ::rmicro::__codegen::Stream<Item = #input> + Send + 'static,
            ) -> ::rmicro::client::StreamingCall<#output> {
                self.client.streaming(&self.service, #path, #endpoint, requests)
            }
        },
    }
}
