//! Attribute macros of the kopf SDK: `#[kopf::on::create(...)]` and friends.
//!
//! Use them through the `kopf` crate (`kopf::on::*`, `kopf::timer`, `kopf::daemon`,
//! `kopf::index`); the generated code refers to `::kopf`. See the `kopf` crate docs for
//! the syntax.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, ItemFn, LitStr, ReturnType, Token, Type, braced};

/// One argument of the attribute: positional, `key = expr`, or `key = {"k": v, ...}`.
enum Arg {
    Positional(Expr),
    Keyword(Ident, KwValue),
}

enum KwValue {
    Expr(Expr),
    Map(Vec<(LitStr, Expr)>),
}

struct MapEntry(LitStr, Expr);

impl Parse for MapEntry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: LitStr = input.parse()?;
        input.parse::<Token![:]>()?;
        Ok(Self(key, input.parse()?))
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            if input.peek(syn::token::Brace) {
                let content;
                braced!(content in input);
                let entries = Punctuated::<MapEntry, Token![,]>::parse_terminated(&content)?;
                Ok(Self::Keyword(
                    key,
                    KwValue::Map(entries.into_iter().map(|e| (e.0, e.1)).collect()),
                ))
            } else {
                Ok(Self::Keyword(key, KwValue::Expr(input.parse()?)))
            }
        } else {
            Ok(Self::Positional(input.parse()?))
        }
    }
}

struct Args(Vec<Arg>);

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Ok(Self(
            Punctuated::<Arg, Token![,]>::parse_terminated(input)?
                .into_iter()
                .collect(),
        ))
    }
}

const SELECTOR: &[&str] = &[
    "group", "version", "kind", "plural", "singular", "shortcut", "category",
];
const BEHAVIOUR: &[&str] = &["id", "param"];
const RETRYING: &[&str] = &["errors", "timeout", "retries", "backoff"];
const FILTERS: &[&str] = &["labels", "annotations", "when", "field", "value"];
const CHANGES: &[&str] = &["old", "new"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Resume,
    Create,
    Update,
    Delete,
    Field,
    Event,
    Timer,
    Daemon,
    Index,
    Startup,
    Cleanup,
    Login,
    Probe,
    Validate,
    Mutate,
}

impl Kind {
    fn variant(self) -> &'static str {
        match self {
            Kind::Resume => "Resume",
            Kind::Create => "Create",
            Kind::Update => "Update",
            Kind::Delete => "Delete",
            Kind::Field => "Field",
            Kind::Event => "Event",
            Kind::Timer => "Timer",
            Kind::Daemon => "Daemon",
            Kind::Index => "Index",
            Kind::Startup => "Startup",
            Kind::Cleanup => "Cleanup",
            Kind::Login => "Login",
            Kind::Probe => "Probe",
            Kind::Validate => "Validate",
            Kind::Mutate => "Mutate",
        }
    }

    fn is_activity(self) -> bool {
        matches!(self, Kind::Startup | Kind::Cleanup | Kind::Login | Kind::Probe)
    }

    /// The keyword options Kopf accepts for this kind.
    fn allowed(self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = BEHAVIOUR.to_vec();
        let extra: &[&[&str]] = match self {
            Kind::Resume => &[SELECTOR, RETRYING, FILTERS, &["deleted"]],
            Kind::Create => &[SELECTOR, RETRYING, FILTERS],
            Kind::Update | Kind::Field => &[SELECTOR, RETRYING, FILTERS, CHANGES],
            Kind::Delete => &[SELECTOR, RETRYING, FILTERS, &["optional"]],
            Kind::Event => &[SELECTOR, FILTERS, &["owns"]],
            // Kopf retries failed indexers; the operator here does not (an error drops
            // the object from the index until its next event), so the options that
            // would shape retries are refused rather than ignored.
            Kind::Index => &[SELECTOR, &["errors"], FILTERS],
            Kind::Timer => &[
                SELECTOR,
                RETRYING,
                FILTERS,
                &["interval", "initial_delay", "idle", "sharp"],
            ],
            Kind::Daemon => &[
                SELECTOR,
                RETRYING,
                FILTERS,
                &[
                    "initial_delay",
                    "cancellation_backoff",
                    "cancellation_timeout",
                    "cancellation_polling",
                ],
            ],
            Kind::Startup | Kind::Cleanup | Kind::Login | Kind::Probe => &[RETRYING],
            Kind::Validate | Kind::Mutate => &[
                SELECTOR,
                FILTERS,
                &[
                    "operations",
                    "operation",
                    "subresource",
                    "persistent",
                    "side_effects",
                    "ignore_failures",
                ],
            ],
        };
        for group in extra {
            v.extend_from_slice(group);
        }
        v
    }
}

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = match syn::parse::<Args>(attr) {
        Ok(a) => a,
        Err(e) => return e.to_compile_error().into(),
    };
    let func = match syn::parse::<ItemFn>(item) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error().into(),
    };
    match generate(kind, args, &func) {
        Ok(registration) => quote! { #func #registration }.into(),
        Err(e) => {
            let err = e.to_compile_error();
            quote! { #func #err }.into()
        }
    }
}

/// A positional argument that names a type (`MyCr`, `crds::MyCr`: its last segment in
/// CamelCase) rather than a value: the handler selects the type's resource.
fn type_path(expr: &Expr) -> Option<&syn::Path> {
    let Expr::Path(p) = expr else { return None };
    let name = p.path.segments.last()?.ident.to_string();
    let camel =
        name.starts_with(|c: char| c.is_ascii_uppercase()) && name.chars().any(|c| c.is_ascii_lowercase());
    (p.qself.is_none() && camel).then_some(&p.path)
}

/// A positional argument that is a function (`is_mine`, `module::is_mine`: its last
/// segment in snake_case) or a closure: Kopf's callable resource selector.
fn is_callable(expr: &Expr) -> bool {
    match expr {
        Expr::Closure(_) => true,
        Expr::Path(p) => {
            p.qself.is_none()
                && p.path.segments.last().is_some_and(|s| {
                    let name = s.ident.to_string();
                    name.chars().any(|c| c.is_ascii_lowercase())
                        && !name.chars().any(|c| c.is_ascii_uppercase())
                })
        }
        _ => false,
    }
}

fn is_everything(expr: &Expr) -> bool {
    matches!(expr, Expr::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "EVERYTHING"))
}

/// True when the return type's last path segment is `Result`.
fn returns_result(ret: &ReturnType) -> bool {
    match ret {
        ReturnType::Default => false,
        ReturnType::Type(_, ty) => match ty.as_ref() {
            Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
    }
}

#[allow(clippy::too_many_lines)] // split under issue 19
fn generate(kind: Kind, args: Args, func: &ItemFn) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "kopf handlers cannot be generic",
        ));
    }
    if sig.inputs.len() > 1 {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "kopf handlers take no argument or one `ctx: &kopf::Context`",
        ));
    }
    if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
        return Err(syn::Error::new(
            r.span(),
            "kopf handlers must be free functions, not methods",
        ));
    }
    let fn_ident = &sig.ident;
    let default_id = fn_ident.to_string().trim_start_matches("r#").to_owned();
    let variant = Ident::new(kind.variant(), Span::call_site());
    let allowed = kind.allowed();

    let mut positional: Vec<TokenStream2> = Vec::new();
    let mut typed: Option<TokenStream2> = None;
    let mut callable: Option<TokenStream2> = None;
    let mut everything = false;
    let mut calls: Vec<TokenStream2> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut seen_keyword = false;
    for arg in args.0 {
        match arg {
            Arg::Positional(expr) => {
                if seen_keyword {
                    return Err(syn::Error::new(
                        expr.span(),
                        "positional selector arguments must come first",
                    ));
                }
                if kind.is_activity() {
                    return Err(syn::Error::new(
                        expr.span(),
                        "operator-level handlers take no resource selector",
                    ));
                }
                if positional.len() == 3 {
                    return Err(syn::Error::new(
                        expr.span(),
                        "at most 3 positional selector arguments",
                    ));
                }
                if is_everything(&expr) {
                    everything = true;
                }
                if is_callable(&expr) {
                    callable = Some(quote_spanned! {expr.span()=> .resource_fn(#expr) });
                }
                if let Some(path) = type_path(&expr) {
                    typed = Some(quote_spanned! {expr.span()=> .custom_resource::<#path>() });
                }
                positional.push(quote_spanned! {expr.span()=> ::kopf::SelectorArg::from(#expr) });
            }
            Arg::Keyword(key, value) => {
                seen_keyword = true;
                let name = key.to_string();
                if kind == Kind::Index && RETRYING.contains(&name.as_str()) && name != "errors" {
                    return Err(syn::Error::new(
                        key.span(),
                        format!(
                            "`{name}` is not supported on `index` handlers: this operator does not \
                             retry failed indexers (an error drops the object from the index until \
                             its next event)"
                        ),
                    ));
                }
                if !allowed.contains(&name.as_str()) {
                    return Err(syn::Error::new(
                        key.span(),
                        format!(
                            "`{name}` is not an option of `{}` handlers; allowed: {}",
                            kind.variant().to_lowercase(),
                            allowed.join(", ")
                        ),
                    ));
                }
                if seen.contains(&name) {
                    return Err(syn::Error::new(key.span(), format!("`{name}` is given twice")));
                }
                seen.push(name.clone());
                match (name.as_str(), value) {
                    ("labels" | "annotations", KwValue::Map(entries)) => {
                        let method = if name == "labels" {
                            quote!(label)
                        } else {
                            quote!(annotation)
                        };
                        for (k, v) in entries {
                            calls.push(quote_spanned! {v.span()=> .#method(#k, #v) });
                        }
                    }
                    ("labels" | "annotations", KwValue::Expr(e)) => {
                        return Err(syn::Error::new(
                            e.span(),
                            format!(
                                "`{name}` takes a map: {name} = {{\"key\": \"value\", \"other\": kopf::PRESENT}}"
                            ),
                        ));
                    }
                    (_, KwValue::Map(_)) => {
                        return Err(syn::Error::new(
                            key.span(),
                            format!("`{name}` does not take a map"),
                        ));
                    }
                    ("operation", KwValue::Expr(e)) => {
                        calls.push(quote_spanned! {e.span()=> .operations([#e]) });
                    }
                    ("new", KwValue::Expr(e)) => {
                        calls.push(quote_spanned! {e.span()=> .new_value(#e) });
                    }
                    (_, KwValue::Expr(e)) => {
                        let method = format_ident!("{}", name, span = key.span());
                        calls.push(quote_spanned! {e.span()=> .#method(#e) });
                    }
                }
            }
        }
    }
    if kind == Kind::Field && !seen.iter().any(|s| s == "field") {
        return Err(syn::Error::new(
            Span::call_site(),
            "`field` handlers need `field = \"spec.path\"`",
        ));
    }
    if !kind.is_activity()
        && positional.is_empty()
        && !seen.iter().any(|s| SELECTOR[2..].contains(&s.as_str()))
    {
        return Err(syn::Error::new(
            Span::call_site(),
            "a resource selector is needed, e.g. (\"kopfexamples\"), (\"kopf.dev\", \"v1\", \"kopfexamples\"), \
             (\"v1\", \"pods\"), (kopf::EVERYTHING), or kind = \"...\"",
        ));
    }
    if typed.is_some() && positional.len() > 1 {
        return Err(syn::Error::new(
            Span::call_site(),
            "a resource type is the whole selector: no other positional arguments beside it",
        ));
    }
    if callable.is_some() && positional.len() > 1 {
        return Err(syn::Error::new(
            Span::call_site(),
            "a callable resource selector is the only positional argument (narrow it with group = / version =)",
        ));
    }
    let selector = if let Some(callable) = callable {
        callable
    } else if let Some(typed) = typed {
        typed
    } else if everything && positional.len() == 1 {
        quote!(.everything())
    } else if positional.is_empty() {
        quote!()
    } else {
        quote!(.resource([#(#positional),*]))
    };

    let call_args = if sig.inputs.is_empty() {
        quote!()
    } else {
        quote!(ctx)
    };
    let convert = if returns_result(&sig.output) {
        quote!(::kopf::__private::result_outcome)
    } else {
        quote!(::kopf::__private::value_outcome)
    };
    let function = if sig.asyncness.is_some() {
        quote! {
            .async_fn(|ctx: ::kopf::Context| async move {
                let ctx = &ctx;
                let _ = ctx;
                #convert(#fn_ident(#call_args).await)
            })
        }
    } else {
        quote! {
            .sync_fn(|ctx: &::kopf::Context| {
                let _ = ctx;
                #convert(#fn_ident(#call_args))
            })
        }
    };

    // Identifies the function across stacked attributes (each expands on its own): the
    // position of its name, which every expansion sees with the same span.
    let position = quote_spanned! {fn_ident.span()=> ::core::line!(), ":", ::core::column!() };
    let function_key = quote! {
        ::core::concat!(::core::module_path!(), "::", #default_id, "@", ::core::file!(), ":", #position)
    };

    Ok(quote! {
        const _: () = {
            fn __kopf_build() -> ::kopf::HandlerBuilder {
                ::kopf::HandlerBuilder::new(::kopf::HandlerKind::#variant, #default_id)
                    #selector
                    #(#calls)*
                    #function
            }
            ::kopf::__private::inventory::submit! {
                ::kopf::__private::Registration {
                    plugin: ::kopf::__private::PluginMeta {
                        name: ::core::env!("CARGO_PKG_NAME"),
                        version: ::core::env!("CARGO_PKG_VERSION"),
                    },
                    file: ::core::file!(),
                    line: ::core::line!(),
                    build: __kopf_build,
                    function: #function_key,
                }
            }
        };
    })
}

macro_rules! attributes {
    ($($(#[$doc:meta])* $name:ident => $kind:ident;)*) => {$(
        $(#[$doc])*
        #[proc_macro_attribute]
        pub fn $name(attr: TokenStream, item: TokenStream) -> TokenStream {
            expand(Kind::$kind, attr, item)
        }
    )*};
}

attributes! {
    /// `@kopf.on.resume`: runs for objects found when the operator starts (and, with
    /// `deleted = true`, even for objects being deleted).
    resume => Resume;
    /// `@kopf.on.create`: runs once when an object is created.
    create => Create;
    /// `@kopf.on.update`: runs when an object's essence changes (`field`, `old`, `new`
    /// narrow it).
    update => Update;
    /// `@kopf.on.delete`: runs when an object is being deleted (`optional = true` needs no
    /// finalizer).
    delete => Delete;
    /// `@kopf.on.field`: runs when the `field` changes, on any cause.
    field => Field;
    /// `@kopf.on.event`: runs for every raw watch event; never retried.
    event => Event;
    /// `@kopf.timer`: runs every `interval` seconds while the object exists.
    timer => Timer;
    /// `@kopf.daemon`: a long-running function per object; check `ctx.stopped()`.
    daemon => Daemon;
    /// `@kopf.index`: returns values to index the object under.
    index => Index;
    /// `@kopf.on.startup`: runs once when the operator starts.
    startup => Startup;
    /// `@kopf.on.cleanup`: runs once when the operator stops.
    cleanup => Cleanup;
    /// `@kopf.on.login`: returns connection info for the operator.
    login => Login;
    /// `@kopf.on.probe`: its result is served on the liveness endpoint.
    probe => Probe;
    /// `@kopf.on.validate`: a validating admission webhook.
    validate => Validate;
    /// `@kopf.on.mutate`: a mutating admission webhook (mutate via `ctx.patch()`).
    mutate => Mutate;
}
