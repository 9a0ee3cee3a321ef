//! Domain types that are Gofer's own rather than the wire's: who did something ([`Actor`]), how a
//! run came to be ([`RunOrigin`]), and the opaque handle a trigger plugin holds for a
//! subscription ([`SubscriptionHandle`]).
//!
//! Pure values: must not do I/O. The wire shapes stay in `models` (v0's field names).

use std::time::Duration;

use crate::models::{Initiator, VariableSource};

/// Who asked for something: recorded on runs (v0's `initiator`) and in cancellations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Nobody in particular: a development server takes requests without tokens.
    Anonymous,
    /// A token: a person's, a run's own (`inject_api_token`), or a gRPC plugin's own.
    Token { id: String, user: String },
    /// A trigger plugin firing for one of its subscriptions.
    Trigger {
        plugin: String,
        subscription: String,
    },
}

impl Actor {
    /// v0's `initiator` shape: `{"id","user"}` (`{"0","Anonymous"}` without a token).
    pub fn initiator(&self) -> Initiator {
        match self {
            Self::Anonymous => Initiator {
                id: "0".into(),
                user: "Anonymous".into(),
            },
            Self::Token { id, user } => Initiator {
                id: id.clone(),
                user: user.clone(),
            },
            Self::Trigger {
                plugin,
                subscription,
            } => Initiator {
                id: format!("plugin:{plugin}"),
                user: format!("{plugin} trigger ({subscription})"),
            },
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.initiator().user)
    }
}

/// How a run came to be, which decides how far its variables are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOrigin {
    /// Started through the API (or the CLI). Its variables are the caller's, who was checked for
    /// the secrets and objects they reference: they are interpolated.
    Api(Actor),
    /// A trigger's fire: its variables come from outside (a webhook body, say) and reach the
    /// task literally. `fire` is the fire's stored row, marked in the run's own transaction.
    Trigger {
        plugin: String,
        subscription: String,
        fire: Option<i64>,
    },
}

impl RunOrigin {
    pub fn actor(&self) -> Actor {
        match self {
            Self::Api(actor) => actor.clone(),
            Self::Trigger {
                plugin,
                subscription,
                ..
            } => Actor::Trigger {
                plugin: plugin.clone(),
                subscription: subscription.clone(),
            },
        }
    }

    /// The source the run's variables are recorded with.
    pub fn variable_source(&self) -> VariableSource {
        match self {
            Self::Api(_) => VariableSource::RunOptions,
            Self::Trigger { .. } => VariableSource::Extension,
        }
    }
}

/// Whether a variable from `source` may hold a reference that is filled in at launch: only what
/// the pipeline's author wrote, and what a checked caller passed when starting a run. What a
/// trigger passed (`extension`) and Gofer's own (`system`) are literal.
pub fn interpolated(source: VariableSource) -> bool {
    matches!(
        source,
        VariableSource::PipelineConfig | VariableSource::RunOptions
    )
}

/// The opaque name a trigger plugin is given for a subscription and names in its fires: 32 random
/// hex digits issued by the server, so it can neither be forged nor guessed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionHandle(String);

impl SubscriptionHandle {
    /// A fresh handle.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// A handle as stored or as a plugin sent it back (to be looked up, never trusted).
    pub fn from_stored(handle: String) -> Self {
        Self(handle)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SubscriptionHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for SubscriptionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A trigger's request to start a run: the handle of the subscription it fires for, the
/// variables it passes (data, never references), and an optional key: fires of one plugin with
/// the same key start one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    pub handle: SubscriptionHandle,
    pub variables: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
}

/// What became of a fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireOutcome {
    /// A run was queued: its id.
    Started(u64),
    /// The same key fired before: that fire's run.
    Duplicate(u64),
    /// No run, and why.
    Refused(String),
}

/// A timeout as its author wrote it (`"90s"`, `"1h 30m"`) and as parsed, once, when the config
/// was registered. On the wire and in storage it is the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeout {
    text: String,
    duration: Duration,
}

impl Timeout {
    /// Parses a timeout; zero is refused. The error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let duration = humantime::parse_duration(text.trim()).map_err(|error| error.to_string())?;
        if duration.is_zero() {
            return Err("it must be longer than zero".into());
        }
        Ok(Self {
            text: text.to_string(),
            duration,
        })
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// As written, for messages ("did not finish within its timeout of 90s").
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl serde::Serialize for Timeout {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .map_err(|problem| serde::de::Error::custom(format!("timeout '{text}': {problem}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_keep_their_text_and_their_duration() {
        let timeout = Timeout::parse("1m 30s").unwrap();
        assert_eq!(timeout.duration(), Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&timeout).unwrap(), "\"1m 30s\"");
        let back: Timeout = serde_json::from_str("\"1m 30s\"").unwrap();
        assert_eq!(back, timeout);
        assert!(
            Timeout::parse("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(serde_json::from_str::<Timeout>("\"5 parsecs\"").is_err());
    }

    #[test]
    fn handles_are_unique_and_plain() {
        let (a, b) = (SubscriptionHandle::new(), SubscriptionHandle::new());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn only_authors_and_checked_callers_are_interpolated() {
        assert!(interpolated(VariableSource::PipelineConfig));
        assert!(interpolated(VariableSource::RunOptions));
        assert!(!interpolated(VariableSource::Extension));
        assert!(!interpolated(VariableSource::System));
        let fired = RunOrigin::Trigger {
            plugin: "webhook".into(),
            subscription: "push".into(),
            fire: None,
        };
        assert_eq!(fired.variable_source(), VariableSource::Extension);
        assert_eq!(fired.actor().initiator().user, "webhook trigger (push)");
        assert_eq!(Actor::Anonymous.initiator().id, "0");
    }
}
