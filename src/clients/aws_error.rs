//! Turning AWS SDK errors into [`SourceError`]s with bounded metric labels.
//!
//! The SDK reports failures in five shapes (construction, timeout, dispatch,
//! unparsable response, service error document) and service errors carry a
//! free-form code that differs by protocol (`QueueDoesNotExist` in the JSON
//! protocol, `AWS.SimpleQueueService.NonExistentQueue` in the query
//! protocol). Users need one line that says what to fix, and
//! `qscale_source_errors_total` needs a small fixed label set, so the mapping
//! happens in two steps: [`classify`] flattens an `SdkError` into the
//! SDK-independent [`AwsFailure`], and [`source_error`] (pure, table-tested)
//! decides the label and the words. Anything unexpected a peer sends ends up
//! as `invalid_response`, never a panic.

use std::error::Error;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::clients::error_text::{chain, one_line};
use crate::contract::SourceError;

/// What went wrong with one AWS call, independent of the SDK's types.
#[derive(Debug, Clone, PartialEq)]
pub enum AwsFailure {
    /// The service answered with an HTTP error; `code` is `None` when the
    /// body was not an AWS error document (an HTML page from a proxy, or a
    /// peer that speaks another protocol).
    Service {
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    /// No usable credentials could be loaded.
    Credentials(String),
    /// The SDK's operation or attempt timeout, or a connect timeout.
    Timeout,
    /// The request never got an answer: connection refused or reset, DNS.
    Unreachable(String),
    /// An answer came back that the protocol cannot parse.
    Unparsable(String),
    /// The request could not be built (an invalid parameter of ours).
    Request(String),
}

/// Flatten an SDK error into an [`AwsFailure`].
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + Error + 'static,
{
    // A missing credential surfaces as a dispatch or construction failure
    // deep in the source chain; find it first so the user is told to check
    // credentials rather than that the endpoint is unreachable.
    if let Some(c) = find_in_chain::<CredentialsError>(err) {
        return AwsFailure::Credentials(chain(c));
    }
    match err {
        SdkError::ServiceError(e) => AwsFailure::Service {
            status: e.raw().status().as_u16(),
            code: e.err().code().map(str::to_string),
            message: e.err().message().map(str::to_string),
        },
        SdkError::TimeoutError(_) => AwsFailure::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => AwsFailure::Timeout,
        SdkError::DispatchFailure(d) if d.is_io() => {
            AwsFailure::Unreachable(format!("cannot connect: {}", chain(err)))
        }
        SdkError::DispatchFailure(_) => {
            AwsFailure::Unreachable(format!("the request failed in transit: {}", chain(err)))
        }
        SdkError::ResponseError(r) => AwsFailure::Unparsable(format!(
            "HTTP {} with a body that could not be read as an answer: {}",
            r.raw().status().as_u16(),
            chain(err)
        )),
        SdkError::ConstructionFailure(_) => AwsFailure::Request(chain(err)),
        _ => AwsFailure::Unparsable(chain(err)),
    }
}

/// The [`SourceError`] for `failure` of the call described by `what`
/// (e.g. `SQS GetQueueAttributes for https://…/jobs`). `timeout` is the
/// budget the call had, reported by timeouts.
pub fn source_error(what: &str, failure: AwsFailure, timeout: Duration) -> SourceError {
    match failure {
        AwsFailure::Timeout => SourceError::Timeout(timeout),
        AwsFailure::Credentials(detail) => {
            SourceError::AccessDenied(format!("{what}: no usable AWS credentials ({detail})"))
        }
        AwsFailure::Unreachable(detail) => SourceError::Unavailable(format!("{what}: {detail}")),
        AwsFailure::Unparsable(detail) => SourceError::InvalidResponse(format!("{what}: {detail}")),
        AwsFailure::Request(detail) => {
            SourceError::Config(format!("{what}: the request could not be built: {detail}"))
        }
        AwsFailure::Service {
            status,
            code,
            message,
        } => service_error(what, status, code.as_deref(), message.as_deref()),
    }
}

fn service_error(
    what: &str,
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
) -> SourceError {
    let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
        // Without an error code the body was not an AWS error document:
        // whatever answered is not speaking the API (a web page, a proxy,
        // a server of another protocol version).
        return match status {
            429 => SourceError::Throttled(format!("{what}: HTTP 429")),
            502..=504 => {
                SourceError::Unavailable(format!("{what}: HTTP {status} from the endpoint"))
            }
            _ => SourceError::InvalidResponse(format!(
                "{what}: HTTP {status} with a body that is neither an answer nor an AWS error document"
            )),
        };
    };
    let code = one_line(code);
    let detail = match message.map(one_line).filter(|m| !m.is_empty()) {
        Some(m) => format!("{what}: {code}: {m}"),
        None => format!("{what}: {code}"),
    };
    match code_kind(&code) {
        Some(CodeKind::Throttled) => SourceError::Throttled(detail),
        Some(CodeKind::AccessDenied) => SourceError::AccessDenied(detail),
        Some(CodeKind::NotFound) => SourceError::NotFound(format!(
            "{what}: the queue does not exist (or was deleted) ({code})"
        )),
        Some(CodeKind::BadAddress) => SourceError::Config(format!(
            "{what}: the queue URL is not valid for this endpoint ({code})"
        )),
        None => match status {
            429 => SourceError::Throttled(detail),
            401 | 403 => SourceError::AccessDenied(detail),
            500..=599 => SourceError::Unavailable(detail),
            // Any other rejection of a well-formed request comes from what
            // we asked for, i.e. from the configuration.
            _ => SourceError::Config(detail),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeKind {
    Throttled,
    AccessDenied,
    NotFound,
    BadAddress,
}

/// Error codes by meaning. Codes are matched with any `Exception` suffix
/// removed, because the JSON and query protocols spell them differently.
fn code_kind(code: &str) -> Option<CodeKind> {
    let base = code.strip_suffix("Exception").unwrap_or(code);
    let kind = match base {
        "Throttling"
        | "ThrottlingException"
        | "RequestThrottled"
        | "TooManyRequests"
        | "RequestLimitExceeded"
        | "SlowDown"
        | "AWS.SimpleQueueService.RequestThrottled"
        | "LimitExceeded"
        | "KmsThrottled"
        | "KMS.Throttling" => CodeKind::Throttled,
        "AccessDenied"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "UnrecognizedClient"
        | "MissingAuthenticationToken"
        | "IncompleteSignature"
        | "InvalidSecurity"
        | "AuthFailure"
        | "NotAuthorized"
        | "KmsAccessDenied"
        | "KMS.AccessDenied" => CodeKind::AccessDenied,
        "QueueDoesNotExist"
        | "AWS.SimpleQueueService.NonExistentQueue"
        | "NonExistentQueue"
        | "QueueDeletedRecently"
        | "AWS.SimpleQueueService.QueueDeletedRecently" => CodeKind::NotFound,
        "InvalidAddress" => CodeKind::BadAddress,
        _ => return None,
    };
    Some(kind)
}

/// The first error of type `T` in `err`'s source chain, `err` included.
fn find_in_chain<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    const T: Duration = Duration::from_secs(3);

    fn service(status: u16, code: Option<&str>, message: Option<&str>) -> AwsFailure {
        AwsFailure::Service {
            status,
            code: code.map(str::to_string),
            message: message.map(str::to_string),
        }
    }

    #[test]
    fn each_failure_gets_its_bounded_label_and_a_line_that_says_what_to_fix() {
        let cases: Vec<(AwsFailure, &str, &str)> = vec![
            (
                service(400, Some("Throttling"), Some("Rate exceeded")),
                "throttled",
                "Rate exceeded",
            ),
            (
                service(400, Some("RequestThrottled"), None),
                "throttled",
                "RequestThrottled",
            ),
            (
                service(429, Some("SomethingNew"), None),
                "throttled",
                "SomethingNew",
            ),
            (service(429, None, None), "throttled", "HTTP 429"),
            (
                service(403, Some("AccessDenied"), Some("not allowed")),
                "access_denied",
                "check the credentials",
            ),
            (
                service(403, Some("InvalidClientTokenId"), None),
                "access_denied",
                "check the credentials",
            ),
            (
                service(403, Some("SignatureDoesNotMatch"), None),
                "access_denied",
                "SignatureDoesNotMatch",
            ),
            (
                service(400, Some("ExpiredToken"), None),
                "access_denied",
                "ExpiredToken",
            ),
            (
                service(400, Some("ExpiredTokenException"), None),
                "access_denied",
                "check the credentials",
            ),
            (
                service(400, Some("AccessDeniedException"), None),
                "access_denied",
                "AccessDeniedException",
            ),
            (
                service(403, Some("Unlisted"), None),
                "access_denied",
                "Unlisted",
            ),
            (
                AwsFailure::Credentials("no providers in chain".into()),
                "access_denied",
                "no usable AWS credentials (no providers in chain); check the credentials",
            ),
            (
                service(400, Some("QueueDoesNotExist"), None),
                "not_found",
                "does not exist",
            ),
            (
                service(400, Some("AWS.SimpleQueueService.NonExistentQueue"), None),
                "not_found",
                "does not exist",
            ),
            (
                service(404, Some("QueueDoesNotExistException"), None),
                "not_found",
                "does not exist",
            ),
            (
                service(400, Some("InvalidAddress"), None),
                "config",
                "queue URL is not valid",
            ),
            (
                service(400, Some("InvalidParameterValue"), Some("bad")),
                "config",
                "InvalidParameterValue: bad",
            ),
            (AwsFailure::Timeout, "timeout", "timed out after 3s"),
            (
                AwsFailure::Unreachable("connection refused".into()),
                "unavailable",
                "connection refused",
            ),
            (
                service(503, Some("ServiceUnavailable"), None),
                "unavailable",
                "ServiceUnavailable",
            ),
            (
                service(500, Some("InternalFailure"), None),
                "unavailable",
                "InternalFailure",
            ),
            (service(502, None, None), "unavailable", "HTTP 502"),
            (
                service(404, None, None),
                "invalid_response",
                "nor an AWS error document",
            ),
            (
                service(200, Some("  "), None),
                "invalid_response",
                "nor an AWS error document",
            ),
            (
                AwsFailure::Unparsable("<html>".into()),
                "invalid_response",
                "<html>",
            ),
            (
                AwsFailure::Request("bad uri".into()),
                "config",
                "could not be built",
            ),
        ];
        for (failure, label, words) in cases {
            let e = source_error("SQS GetQueueAttributes for q", failure.clone(), T);
            assert_eq!(e.metric_label(), label, "{failure:?} -> {e}");
            let line = e.to_string();
            assert!(
                line.contains(words),
                "{failure:?}: {line:?} lacks {words:?}"
            );
            assert!(!line.contains('\n'), "{line:?} is not one line");
        }
    }

    fn raw(status: u16, body: &'static str) -> HttpResponse {
        Response::new(
            StatusCode::try_from(status).expect("valid test status"),
            SdkBody::from(body),
        )
    }

    #[test]
    fn sdk_service_errors_are_classified_by_their_metadata() {
        let cases = [
            ("QueueDoesNotExist", 400, "not_found"),
            ("AWS.SimpleQueueService.NonExistentQueue", 400, "not_found"),
            ("RequestThrottled", 400, "throttled"),
            ("InvalidClientTokenId", 403, "access_denied"),
            ("InternalError", 500, "unavailable"),
        ];
        for (code, status, label) in cases {
            let meta = ErrorMetadata::builder().code(code).message("msg").build();
            let err: SdkError<GetQueueAttributesError, HttpResponse> =
                SdkError::service_error(GetQueueAttributesError::generic(meta), raw(status, "{}"));
            let e = source_error("op", classify(&err), T);
            assert_eq!(e.metric_label(), label, "{code}: {e}");
        }
    }

    #[test]
    fn a_service_error_without_a_code_is_an_invalid_response() {
        let meta = ErrorMetadata::builder().build();
        let err: SdkError<GetQueueAttributesError, HttpResponse> = SdkError::service_error(
            GetQueueAttributesError::generic(meta),
            raw(404, "<html><body>Not Found</body></html>"),
        );
        let e = source_error("op", classify(&err), T);
        assert_eq!(e.metric_label(), "invalid_response", "{e}");
    }

    #[test]
    fn a_credentials_failure_deep_in_a_dispatch_failure_says_to_check_credentials() {
        let cause = CredentialsError::not_loaded("no providers in chain provided credentials");
        let err: SdkError<GetQueueAttributesError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::other(Box::new(cause), None));
        let e = source_error("op", classify(&err), T);
        assert_eq!(e.metric_label(), "access_denied", "{e}");
        assert!(e.to_string().contains("check the credentials"), "{e}");
    }

    #[test]
    fn dispatch_failures_are_unavailable_and_connector_timeouts_are_timeouts() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err: SdkError<GetQueueAttributesError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        assert_eq!(
            source_error("op", classify(&err), T).metric_label(),
            "unavailable"
        );

        let slow = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        let err: SdkError<GetQueueAttributesError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::timeout(Box::new(slow)));
        assert_eq!(
            source_error("op", classify(&err), T).metric_label(),
            "timeout"
        );

        let err: SdkError<GetQueueAttributesError, HttpResponse> =
            SdkError::timeout_error("operation timeout");
        assert_eq!(
            source_error("op", classify(&err), T).metric_label(),
            "timeout"
        );
    }

    #[test]
    fn an_unparsable_answer_is_an_invalid_response() {
        let err: SdkError<GetQueueAttributesError, HttpResponse> =
            SdkError::response_error("expected JSON", raw(200, "<html>hello</html>"));
        let e = source_error("op", classify(&err), T);
        assert_eq!(e.metric_label(), "invalid_response", "{e}");
        assert!(e.to_string().contains("HTTP 200"), "{e}");
    }

    #[test]
    fn error_chains_read_as_one_line_without_debug_dumps() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err: SdkError<GetQueueAttributesError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        let e = source_error("op", classify(&err), T).to_string();
        assert!(
            e.contains("cannot connect") && e.contains("Connection refused"),
            "{e}"
        );
        assert!(!e.contains("DispatchFailure {"), "{e}");
    }
}
