//! The tools' arguments: their JSON Schemas (what a model reads to call a
//! tool well, so the doc comments here are written for a model), the checks
//! a schema cannot state, and the wire requests they become.
//!
//! A bad argument is an [`ArgError`] naming the argument and the fix, which
//! the server returns as a tool error (before calling nexusd). What nexusd
//! checks anyway (importance's range, a text's length) is left to it, so
//! there is one source of truth for those rules.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use nexus_client::wire::{FeedbackRequest, ForgetRequest, MemoryInput, MemoryTag, RecallRequest, Route, TimeRange};
use schemars::JsonSchema;
use serde::Deserialize;

/// Results of a recall when the call names no `k`: enough for a model to
/// choose from, few enough to keep the context small.
pub const DEFAULT_K: u32 = 5;

/// The most results one recall returns: at ~2,000 characters a text at most
/// (`shape::MAX_TEXT_CHARS`) this bounds an answer near 100 KB.
pub const MAX_K: u32 = 50;

/// The `source` of every memory stored through this server (nexusd keeps it
/// as provenance; `nexus export` shows it).
pub const SOURCE: &str = "nexus-mcp";

const MS_PER_DAY: i64 = 86_400_000;

/// A tool argument that cannot be used, and how to fix it (one sentence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn arg_error(message: impl Into<String>) -> ArgError {
    ArgError(message.into())
}

/// Arguments of `remember`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberArgs {
    /// The fact, preference or event to store, as one self-contained statement that will make sense when
    /// recalled later without the conversation around it (e.g. "The user's cat is called Miso").
    pub text: String,
    /// Whose memory this is (an agent, a user, a project). Omit it to use this server's default namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// A stable name that makes the memory replaceable: remembering again with the same key and namespace
    /// replaces the old memory (use it for facts that change, e.g. "user-favourite-food").
    #[serde(default)]
    pub key: Option<String>,
    /// Labels to filter recalls by later, as an object of strings, e.g. {"who": "caroline", "topic": "food"}.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// How much the memory should weigh in recall ranking; 1.0 (the default) is ordinary, higher matters more.
    #[serde(default)]
    pub importance: Option<f32>,
    /// When the remembered thing happened, RFC 3339 (e.g. "2024-05-01T12:00:00Z"). Omit it for now.
    #[serde(default)]
    pub created_at: Option<String>,
}

impl RememberArgs {
    /// The memory to store; `default_namespace` when the call names none.
    pub fn into_memory(self, default_namespace: &str) -> Result<MemoryInput, ArgError> {
        if self.text.trim().is_empty() {
            return Err(arg_error(
                "`text` is empty: give the fact, preference or event to remember",
            ));
        }
        let created_at_ms = self
            .created_at
            .as_deref()
            .map(|time| timestamp_ms("created_at", time))
            .transpose()?;
        if let Some(key) = &self.key
            && key.is_empty()
        {
            return Err(arg_error(
                "`key` is empty: omit it, or give a stable name for the memory",
            ));
        }
        Ok(MemoryInput {
            key: self.key,
            tags: tags(self.tags)?,
            created_at_ms,
            importance: self.importance.unwrap_or(1.0),
            source: Some(SOURCE.to_owned()),
            ..MemoryInput::new(namespace(self.namespace, default_namespace)?, self.text)
        })
    }
}

/// Arguments of `recall`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallArgs {
    /// What to look for, in words (a question or a topic); memories are found by meaning and by words.
    pub query: String,
    /// How many memories to return, best first (default 5, at most 50).
    #[serde(default)]
    #[schemars(range(min = 1, max = 50))]
    pub k: Option<u32>,
    /// The namespace to search. Omit it to use this server's default namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only memories carrying all these labels, e.g. {"who": "caroline"}.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// Only memories created at or after this time: RFC 3339 (e.g. "2024-05-01T00:00:00Z") or a date
    /// ("2024-05-01", midnight UTC).
    #[serde(default)]
    pub since: Option<String>,
    /// Only memories created at or before this time: RFC 3339, or a date (which includes that whole day, UTC).
    #[serde(default)]
    pub until: Option<String>,
    /// How hard to search. Omit it (or "auto") and nexusd picks per query; the others are for when an answer
    /// was missed.
    #[serde(default)]
    pub route: Option<RouteArg>,
}

/// The recall routes a call may force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteArg {
    /// nexusd picks the route for the query (the default).
    Auto,
    /// Only answers cached from earlier identical or similar recalls (an error when none is cached).
    Cache,
    /// Meaning and words, light ranking: fast.
    Smart,
    /// Every search engine, full ranking.
    Full,
    /// The full pipeline plus query expansion and exact re-ranking: slowest, most thorough.
    Max,
}

impl RouteArg {
    /// The route to force; `None` lets the router pick.
    pub fn route(self) -> Option<Route> {
        match self {
            Self::Auto => None,
            Self::Cache => Some(Route::CacheOnly),
            Self::Smart => Some(Route::SmartRouting),
            Self::Full => Some(Route::FullPipeline),
            Self::Max => Some(Route::MaximumIntelligence),
        }
    }
}

impl RecallArgs {
    /// The recall request; `default_namespace` when the call names none.
    pub fn into_request(self, default_namespace: &str) -> Result<RecallRequest, ArgError> {
        if self.query.trim().is_empty() {
            return Err(arg_error("`query` is empty: say what to look for"));
        }
        let k = self.k.unwrap_or(DEFAULT_K);
        if !(1..=MAX_K).contains(&k) {
            return Err(arg_error(format!(
                "`k` is {k}: give 1 to {MAX_K} (default {DEFAULT_K})"
            )));
        }
        Ok(RecallRequest {
            route: self.route.and_then(RouteArg::route),
            filter: tags(self.tags)?,
            created: created_range(self.since.as_deref(), self.until.as_deref())?,
            ..RecallRequest::new(namespace(self.namespace, default_namespace)?, self.query, k)
        })
    }
}

/// Arguments of `forget`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetArgs {
    /// The ids of the memories to delete (the `id` of recall results or of remember's answer).
    #[serde(default)]
    pub ids: Option<Vec<u64>>,
    /// Delete EVERY memory of this namespace. Only when asked to wipe a whole memory; give `ids` otherwise.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl ForgetArgs {
    /// What to delete. The default namespace never applies: a forget that
    /// names nothing is refused (a slip must not read as "forget everything",
    /// nor silently do nothing), and so is one naming both ids and a namespace
    /// (which of the two was meant cannot be told).
    pub fn into_request(self) -> Result<ForgetRequest, ArgError> {
        let ids = self.ids.filter(|ids| !ids.is_empty());
        match (ids, self.namespace) {
            (Some(_), Some(_)) => Err(arg_error(
                "give `ids` or `namespace`, not both: `ids` deletes those memories, `namespace` deletes all of it (nothing was deleted)",
            )),
            (Some(ids), None) => Ok(ForgetRequest::Ids(ids)),
            (None, Some(namespace)) if namespace.is_empty() => Err(arg_error(
                "`namespace` is empty: name the namespace to delete (nothing was deleted)",
            )),
            (None, Some(namespace)) => Ok(ForgetRequest::Namespace(namespace)),
            (None, None) => Err(arg_error(
                "forget needs what to delete: `ids` (from recall results) or a `namespace` (nothing was deleted)",
            )),
        }
    }
}

/// Arguments of `feedback`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackArgs {
    /// The `id` of a memory that a recall returned.
    pub memory_id: u64,
    /// The `recall_id` of the recall that returned it.
    pub recall_id: u64,
    /// true if the memory helped answer, false if it was irrelevant.
    pub useful: bool,
}

impl FeedbackArgs {
    /// The feedback request.
    pub fn into_request(self) -> FeedbackRequest {
        FeedbackRequest {
            memory_id: self.memory_id,
            recall_request_id: self.recall_id,
            useful: self.useful,
        }
    }
}

/// The call's namespace, else the server's default; an empty one is a slip.
fn namespace(explicit: Option<String>, default_namespace: &str) -> Result<String, ArgError> {
    match explicit {
        Some(namespace) if namespace.is_empty() => Err(arg_error(
            "`namespace` is empty: omit it to use this server's default namespace",
        )),
        Some(namespace) => Ok(namespace),
        None => Ok(default_namespace.to_owned()),
    }
}

/// Tags as the wire carries them (sorted by key, as the object's keys are
/// unique); an empty key is refused.
fn tags(tags: Option<BTreeMap<String, String>>) -> Result<Vec<MemoryTag>, ArgError> {
    let tags = tags.unwrap_or_default();
    if tags.contains_key("") {
        return Err(arg_error(
            "a tag's key is empty in `tags`: give labels as {\"key\": \"value\"}",
        ));
    }
    Ok(tags.into_iter().map(|(key, value)| MemoryTag { key, value }).collect())
}

/// An RFC 3339 time in milliseconds since the Unix epoch.
fn timestamp_ms(name: &str, time: &str) -> Result<i64, ArgError> {
    time.parse::<Timestamp>().map(Timestamp::as_millisecond).map_err(|_| {
        arg_error(format!(
            "`{name}` is {time:?}: give an RFC 3339 time such as 2024-05-01T12:00:00Z"
        ))
    })
}

/// A time bound of a recall: RFC 3339, or a date (midnight UTC) with
/// whether it was one (so `until` can include the whole day).
fn time_bound(name: &str, time: &str) -> Result<(i64, bool), ArgError> {
    if let Ok(timestamp) = time.parse::<Timestamp>() {
        return Ok((timestamp.as_millisecond(), false));
    }
    let bad = || {
        arg_error(format!(
            "`{name}` is {time:?}: give an RFC 3339 time (2024-05-01T12:00:00Z) or a date (2024-05-01)"
        ))
    };
    let date: Date = time.parse().map_err(|_| bad())?;
    let midnight = date.to_zoned_datetime(TimeZone::UTC).map_err(|_| bad())?;
    Ok((midnight.timestamp().as_millisecond(), true))
}

/// `since`/`until` as nexusd's half-open range: both ends inclusive for the
/// caller, an open end reaching the end of time; `None` when neither is given.
fn created_range(since: Option<&str>, until: Option<&str>) -> Result<Option<TimeRange>, ArgError> {
    if since.is_none() && until.is_none() {
        return Ok(None);
    }
    let start_ms = since.map(|since| time_bound("since", since)).transpose()?;
    let end_ms = until
        .map(|until| time_bound("until", until))
        .transpose()?
        .map(|(ms, whole_day)| ms.saturating_add(if whole_day { MS_PER_DAY } else { 1 }));
    let range = TimeRange {
        start_ms: start_ms.map_or(i64::MIN, |(ms, _)| ms),
        end_ms: end_ms.unwrap_or(i64::MAX),
    };
    if range.start_ms >= range.end_ms {
        return Err(arg_error(
            "`since` is after `until`: nothing can match (both ends are inclusive)",
        ));
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_map(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[track_caller]
    fn check_recall(args: RecallArgs, expected: Result<RecallRequest, &str>) {
        match (args.into_request("agent-1"), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(words)) => assert!(got.0.contains(words), "{got:?} lacks {words:?}"),
            (got, want) => panic!("got {got:?}, expected {want:?}"),
        }
    }

    fn recall(query: &str) -> RecallArgs {
        RecallArgs {
            query: query.into(),
            ..RecallArgs::default()
        }
    }

    #[test]
    fn remember_maps_tags_times_namespace_and_source() {
        let args = RememberArgs {
            text: "The user's cat is called Miso".into(),
            key: Some("cat".into()),
            tags: tag_map(&[("who", "user"), ("topic", "pets")]),
            importance: Some(2.5),
            created_at: Some("2024-05-01T12:00:00+02:00".into()),
            ..RememberArgs::default()
        };
        let memory = args.into_memory("agent-1").unwrap();
        assert_eq!(memory.namespace, "agent-1", "the default namespace applies");
        assert_eq!(memory.key.as_deref(), Some("cat"));
        let tags: Vec<(&str, &str)> = memory.tags.iter().map(|t| (t.key.as_str(), t.value.as_str())).collect();
        assert_eq!(tags, [("topic", "pets"), ("who", "user")]);
        assert_eq!(memory.created_at_ms, Some(1_714_557_600_000));
        assert_eq!(memory.importance, 2.5);
        assert_eq!(memory.source.as_deref(), Some(SOURCE));
        assert_eq!(memory.vector, None, "never a vector from a model");
    }

    #[test]
    fn remember_defaults_and_refusals() {
        let plain = RememberArgs {
            text: "tea over coffee".into(),
            namespace: Some("agent-2".into()),
            ..RememberArgs::default()
        };
        let memory = plain.into_memory("agent-1").unwrap();
        assert_eq!((memory.namespace.as_str(), memory.importance), ("agent-2", 1.0));
        assert_eq!((memory.created_at_ms, memory.tags.len()), (None, 0));
        let refused = |args: RememberArgs, words: &str| {
            let error = args.into_memory("agent-1").unwrap_err();
            assert!(error.0.contains(words), "{error:?} lacks {words:?}");
        };
        let text = || RememberArgs {
            text: "x".into(),
            ..RememberArgs::default()
        };
        refused(RememberArgs::default(), "`text` is empty");
        refused(
            RememberArgs {
                created_at: Some("yesterday".into()),
                ..text()
            },
            "RFC 3339",
        );
        refused(
            RememberArgs {
                namespace: Some(String::new()),
                ..text()
            },
            "`namespace` is empty",
        );
        refused(
            RememberArgs {
                tags: tag_map(&[("", "v")]),
                ..text()
            },
            "key is empty",
        );
        refused(
            RememberArgs {
                key: Some(String::new()),
                ..text()
            },
            "`key` is empty",
        );
    }

    #[test]
    fn recall_maps_k_route_tags_and_namespace() {
        check_recall(recall("pets"), Ok(RecallRequest::new("agent-1", "pets", DEFAULT_K)));
        let full = RecallArgs {
            k: Some(MAX_K),
            namespace: Some("tour".into()),
            tags: tag_map(&[("who", "caroline")]),
            route: Some(RouteArg::Max),
            ..recall("pets")
        };
        let expected = RecallRequest {
            route: Some(Route::MaximumIntelligence),
            filter: vec![MemoryTag {
                key: "who".into(),
                value: "caroline".into(),
            }],
            ..RecallRequest::new("tour", "pets", MAX_K)
        };
        check_recall(full, Ok(expected));
        let routes = [
            (RouteArg::Auto, None),
            (RouteArg::Cache, Some(Route::CacheOnly)),
            (RouteArg::Smart, Some(Route::SmartRouting)),
            (RouteArg::Full, Some(Route::FullPipeline)),
        ];
        for (arg, route) in routes {
            assert_eq!(arg.route(), route);
        }
        check_recall(recall("  "), Err("`query` is empty"));
        for k in [0, MAX_K + 1] {
            check_recall(
                RecallArgs {
                    k: Some(k),
                    ..recall("x")
                },
                Err("give 1 to 50"),
            );
        }
    }

    #[test]
    fn route_names_are_the_documented_lowercase_words() {
        let parse = |word: &str| serde_json::from_value::<RouteArg>(serde_json::json!(word));
        assert_eq!(parse("smart").unwrap(), RouteArg::Smart);
        assert_eq!(parse("auto").unwrap(), RouteArg::Auto);
        assert!(parse("fast").is_err());
        assert!(parse("Smart").is_err());
    }

    #[test]
    fn since_and_until_are_inclusive_rfc3339_or_whole_days() {
        let day_ms = 1_714_521_600_000; // 2024-05-01T00:00:00Z
        let range = |since: Option<&str>, until: Option<&str>| {
            let args = RecallArgs {
                since: since.map(Into::into),
                until: until.map(Into::into),
                ..recall("x")
            };
            args.into_request("a").map(|request| request.created)
        };
        let whole_day = TimeRange {
            start_ms: day_ms,
            end_ms: day_ms + MS_PER_DAY,
        };
        assert_eq!(range(Some("2024-05-01"), Some("2024-05-01")), Ok(Some(whole_day)));
        let exact = range(None, Some("2024-05-01T00:00:00Z")).unwrap().unwrap();
        assert_eq!((exact.start_ms, exact.end_ms), (i64::MIN, day_ms + 1));
        let open = range(Some("2024-05-01T02:00:00+02:00"), None).unwrap().unwrap();
        assert_eq!((open.start_ms, open.end_ms), (day_ms, i64::MAX));
        assert_eq!(range(None, None), Ok(None));
        let bad = range(Some("last week"), None).unwrap_err();
        assert!(
            bad.0.contains("`since` is \"last week\"") && bad.0.contains("RFC 3339"),
            "{bad}"
        );
        assert!(range(None, Some("2024-02-30")).unwrap_err().0.contains("`until`"));
        let reversed = range(Some("2024-06-01"), Some("2024-05-01")).unwrap_err();
        assert!(reversed.0.contains("after `until`"), "{reversed}");
    }

    #[test]
    fn forget_refuses_nothing_both_and_an_empty_namespace() {
        let forget = |ids: Option<Vec<u64>>, namespace: Option<&str>| {
            ForgetArgs {
                ids,
                namespace: namespace.map(Into::into),
            }
            .into_request()
        };
        assert_eq!(forget(Some(vec![3, 4]), None), Ok(ForgetRequest::Ids(vec![3, 4])));
        assert_eq!(forget(None, Some("tour")), Ok(ForgetRequest::Namespace("tour".into())));
        for (ids, namespace, words) in [
            (None, None, "forget needs what to delete"),
            (Some(vec![]), None, "forget needs what to delete"),
            (Some(vec![1]), Some("tour"), "not both"),
            (None, Some(""), "`namespace` is empty"),
        ] {
            let error = forget(ids, namespace).unwrap_err();
            assert!(
                error.0.contains(words) && error.0.contains("nothing was deleted"),
                "{error}"
            );
        }
    }

    #[test]
    fn unknown_and_mistyped_arguments_are_refused_by_the_schema_types() {
        let remember = serde_json::from_value::<RememberArgs>(serde_json::json!({"text": "x", "colour": "red"}));
        assert!(remember.unwrap_err().to_string().contains("colour"));
        let tags = serde_json::from_value::<RememberArgs>(serde_json::json!({"text": "x", "tags": ["a=b"]}));
        assert!(tags.is_err(), "tags are an object of strings");
        let feedback = serde_json::from_value::<FeedbackArgs>(serde_json::json!({"memory_id": 1, "recall_id": 2}));
        assert!(feedback.unwrap_err().to_string().contains("useful"));
        let parsed = serde_json::from_value::<FeedbackArgs>(
            serde_json::json!({"memory_id": 1, "recall_id": 9, "useful": false}),
        )
        .unwrap();
        let request = parsed.into_request();
        assert_eq!(
            (request.memory_id, request.recall_request_id, request.useful),
            (1, 9, false)
        );
    }
}
