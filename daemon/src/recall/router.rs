//! The router: which route answers a recall, and why, from cheap features
//! of the query (DESIGN §5).
//!
//! Features ([`Features::of`], a few hundred nanoseconds for a short
//! question): words, entities (names, dates, numbers, from the lexical
//! engine's extractor), whether a vector came with it, time words ("when",
//! "before", month names...), words that join several things ("and",
//! "both"), and the cache's prediction of an exact hit.
//!
//! Rules ([`RouterConfig`], in order; the first that applies wins):
//! 1. the request forces a route → that route;
//! 2. the cache predicts an exact hit → CacheOnly (a miss then falls
//!    through to SmartRouting: the prediction is a hint, not a promise);
//! 3. several distinct entities, or one and a joining word ("What do
//!    Melanie and Caroline both like?") → MaximumIntelligence (expansion
//!    through entity links finds the second hop);
//! 4. a long query (≥ `full_min_words`), or time words → FullPipeline;
//! 5. otherwise → SmartRouting.
//!
//! The configuration is swapped whole without locks (`ArcSwap`, SIGHUP); a
//! recall reads one consistent version. If deciding panics (a bug in a
//! feature), the plain fallback rule answers: SmartRouting, reason saying so.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::recall::lexical::entities::{EntityExtractor, EntityKind, EntitySpan, ExtractScratch};
use crate::recall::query::Route;

/// The router's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// Queries of at least this many words take the full pipeline.
    pub full_min_words: usize,
    /// Distinct entities that make a query multi-hop.
    pub max_min_entities: usize,
    /// Let the router choose the maximum route at all (it costs the most).
    pub allow_max: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            full_min_words: 24,
            max_min_entities: 2,
            allow_max: true,
        }
    }
}

/// Words that ask about time.
const TIME_WORDS: [&str; 14] = [
    "when",
    "before",
    "after",
    "since",
    "until",
    "ago",
    "yesterday",
    "today",
    "tomorrow",
    "last",
    "during",
    "year",
    "month",
    "week",
];

/// Words that join two things a question asks about together.
const JOINING_WORDS: [&str; 5] = ["and", "both", "between", "common", "together"];

/// What the router looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// Words in the text.
    pub words: usize,
    /// Distinct named entities (names, dates, numbers...).
    pub entities: usize,
    /// A date or a time word is in it.
    pub time: bool,
    /// A joining word is in it.
    pub joining: bool,
    /// A vector came with the query.
    pub vector: bool,
    /// The cache predicts an exact hit.
    pub cached: bool,
}

impl Features {
    /// The features of a query (text, vector, the cache's prediction).
    pub fn of(extractor: &EntityExtractor, text: Option<&str>, vector: bool, cached: bool) -> Self {
        let mut features = Features {
            vector,
            cached,
            ..Features::default()
        };
        let Some(text) = text else { return features };
        for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            features.words += 1;
            let lower = word.to_ascii_lowercase();
            features.time |= TIME_WORDS.contains(&lower.as_str());
            features.joining |= JOINING_WORDS.contains(&lower.as_str());
        }
        let (mut scratch, mut spans) = (ExtractScratch::new(), Vec::<EntitySpan>::new());
        extractor.extract(text, &mut scratch, &mut spans);
        let mut keys: Vec<String> = Vec::with_capacity(spans.len());
        let mut key = String::new();
        for span in &spans {
            features.time |= span.kind == EntityKind::Date;
            // A question's first word is capitalised without being a name.
            if span.kind == EntityKind::Name && span.start == 0 && !span.text(text).contains(' ') {
                continue;
            }
            extractor.key(text, span, &mut key);
            if !keys.contains(&key) {
                keys.push(key.clone());
            }
        }
        features.entities = keys.len();
        features
    }
}

/// The route chosen and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The route.
    pub route: Route,
    /// Why, for the response and the logs.
    pub reason: &'static str,
}

/// Picks routes; the configuration can be swapped while recalls run.
#[derive(Debug)]
pub struct Router {
    config: ArcSwap<RouterConfig>,
    extractor: EntityExtractor,
}

impl Router {
    /// A router with `config`; entities found by `extractor`.
    pub fn new(config: RouterConfig, extractor: EntityExtractor) -> Self {
        Self {
            config: ArcSwap::from_pointee(config),
            extractor,
        }
    }

    /// Replaces the configuration (recalls in flight keep the one they read).
    pub fn set_config(&self, config: RouterConfig) {
        self.config.store(Arc::new(config));
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<RouterConfig> {
        self.config.load_full()
    }

    /// The features of a query.
    pub fn features(&self, text: Option<&str>, vector: bool, cached: bool) -> Features {
        Features::of(&self.extractor, text, vector, cached)
    }

    /// The dates `text` names, as entity keys without their kind prefix
    /// (`2023-05-08`, `2023-05`; other forms as the extractor writes them).
    pub fn date_keys(&self, text: &str) -> Vec<String> {
        let (mut scratch, mut spans) = (ExtractScratch::new(), Vec::<EntitySpan>::new());
        self.extractor.extract(text, &mut scratch, &mut spans);
        let mut key = String::new();
        (spans.iter())
            .filter(|span| span.kind == EntityKind::Date)
            .filter_map(|span| {
                self.extractor.key(text, span, &mut key);
                key.strip_prefix("d:").map(str::to_owned)
            })
            .collect()
    }

    /// The route for a query with `features`, unless `forced`. Never fails:
    /// a panic while deciding gives the fallback rule's answer.
    pub fn decide(&self, forced: Route, features: impl FnOnce() -> Features) -> Decision {
        if forced != Route::Auto {
            return Decision {
                route: forced,
                reason: "forced by the request",
            };
        }
        let config = self.config.load();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rules(&config, &features()))).unwrap_or(Decision {
            route: Route::SmartRouting,
            reason: "fallback rule: the router failed",
        })
    }
}

/// The rules of the module docs, in order.
pub fn rules(config: &RouterConfig, f: &Features) -> Decision {
    let decision = |route, reason| Decision { route, reason };
    if f.cached {
        return decision(Route::CacheOnly, "the same query was answered since the last write");
    }
    let multi_hop = f.entities >= config.max_min_entities || (f.entities >= 1 && f.joining);
    if config.allow_max && multi_hop && f.words >= 3 {
        return decision(
            Route::MaximumIntelligence,
            "several entities: expand through entity links",
        );
    }
    if f.words >= config.full_min_words {
        return decision(Route::FullPipeline, "a long query: every engine, full fusion");
    }
    if f.time {
        return decision(Route::FullPipeline, "time words: date proximity in full fusion");
    }
    decision(Route::SmartRouting, "a short query: ANN and lexical, light fusion")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(
            RouterConfig::default(),
            EntityExtractor::new(&[]).expect("no keyword lists"),
        )
    }

    fn route(text: &str) -> Route {
        let router = router();
        router
            .decide(Route::Auto, || router.features(Some(text), false, false))
            .route
    }

    #[test]
    fn queries_take_the_route_their_features_call_for() {
        assert_eq!(route("favourite colour"), Route::SmartRouting);
        assert_eq!(route("When did Caroline go to the support group?"), Route::FullPipeline);
        assert_eq!(
            route("What do Melanie and Caroline both like to do?"),
            Route::MaximumIntelligence
        );
        let long = "word ".repeat(30);
        assert_eq!(route(&long), Route::FullPipeline);
    }

    #[test]
    fn a_forced_route_and_a_predicted_cache_hit_win_with_their_reason() {
        let router = router();
        let forced = router.decide(Route::FullPipeline, || panic!("features are not needed"));
        assert_eq!(
            (forced.route, forced.reason),
            (Route::FullPipeline, "forced by the request")
        );
        let cached = router.decide(Route::Auto, || router.features(Some("colour"), false, true));
        assert_eq!(cached.route, Route::CacheOnly);
    }

    #[test]
    fn a_failing_router_falls_back_to_the_plain_rule() {
        let router = router();
        let decision = router.decide(Route::Auto, || panic!("a feature failed"));
        assert_eq!(decision.route, Route::SmartRouting);
        assert!(decision.reason.contains("fallback"));
    }

    #[test]
    fn a_swapped_configuration_takes_effect_for_the_next_decision() {
        let router = router();
        let question = "What do Melanie and Caroline both like to do?";
        router.set_config(RouterConfig {
            allow_max: false,
            ..RouterConfig::default()
        });
        assert_eq!(
            router
                .decide(Route::Auto, || router.features(Some(question), false, false))
                .route,
            Route::SmartRouting
        );
    }

    #[test]
    fn features_count_distinct_entities_not_the_capitalised_first_word() {
        let router = router();
        let f = router.features(
            Some("Where did Caroline meet caroline and Melanie in May 2023?"),
            true,
            false,
        );
        assert!(f.vector && f.time && f.joining);
        assert!(f.entities >= 2, "{f:?}");
        assert_eq!(router.features(Some("Where is it?"), false, false).entities, 0);
    }
}
