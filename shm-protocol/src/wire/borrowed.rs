//! A recall's answer serialized from borrowed bytes: the daemon writes it
//! into the response ring straight from the memories it holds, with no
//! owned copy of texts, namespaces, tags, signal names or the route reason
//! in between (DESIGN §5, "zero copy on the way out").
//!
//! [`RecalledResponseRef`] is a mirror of an `Ok`/`Degraded` [`Response`]
//! whose body is `Recalled`: its archived type IS [`ArchivedResponse`], and
//! it serializes its parts in the same order as the owned type's derive
//! does, so the bytes are the same (`tests` compares them for random
//! answers). A client decodes them as any `Response`: nothing about the
//! protocol changes, and a change to the owned types that the mirror does
//! not follow fails that test.
//!
//! Not here: where the hits come from (the daemon implements
//! [`RecallHitSource`] for its results), or errors (owned `Response`s).
//!
//! [`Response`]: super::Response

use rkyv::munge::munge;
use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer, WriterExt};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::util::SerVec;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, SerializeWith};
use rkyv::{Archive, Place, Serialize};

use super::{
    ArchivedMemoryTag, ArchivedRecallHit, ArchivedResponse, ArchivedResponseBody, ArchivedSignal, ArchivedStatus,
    Route, RouteResolver, ServerTimings, ServerTimingsResolver,
};

/// One recall result as its holder stores it, read in place. Each iterator
/// may be asked for more than once (a count, the out-of-line bytes, the
/// elements) and must yield the same items every time.
pub trait RecallHitSource {
    /// Memory id.
    fn id(&self) -> u64;
    /// Final score.
    fn score(&self) -> f32;
    /// The memory's text.
    fn text(&self) -> &str;
    /// Its namespace.
    fn namespace(&self) -> &str;
    /// Its tags, (key, value).
    fn tags(&self) -> impl Iterator<Item = (&str, &str)>;
    /// When it was created, ms since the Unix epoch.
    fn created_at_ms(&self) -> i64;
    /// Why it was chosen, (signal name, contribution).
    fn signals(&self) -> impl Iterator<Item = (&str, f32)>;
}

/// A recall's `Response` over borrowed parts: archived, exactly the owned
/// `Response { status: Ok or Degraded, body: Recalled(hits), .. }`.
#[derive(Debug, Clone, Copy)]
pub struct RecalledResponseRef<'a, H> {
    /// The request's id.
    pub request_id: u64,
    /// `Some(reason)`: `Status::Degraded`; `None`: `Status::Ok`.
    pub degraded: Option<&'a str>,
    /// The recall route taken.
    pub route: Route,
    /// Why the router took it.
    pub route_reason: &'a str,
    /// Where the daemon's time went.
    pub timings: ServerTimings,
    /// The results, best first.
    pub hits: &'a [H],
}

/// The out-of-line parts of a [`RecalledResponseRef`], once written.
pub struct RecalledResponseResolver<'a> {
    status: StatusRefResolver<'a>,
    route: RouteResolver,
    route_reason: StringResolver,
    timings: ServerTimingsResolver,
    hits: (VecResolver, usize),
}

impl<'a, H: RecallHitSource> Archive for RecalledResponseRef<'a, H> {
    type Archived = ArchivedResponse;
    type Resolver = RecalledResponseResolver<'a>;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        munge!(let ArchivedResponse { request_id, status, route, route_reason, timings, body } = out);
        self.request_id.resolve((), request_id);
        self.status().resolve(resolver.status, status);
        self.route.resolve(resolver.route, route);
        ArchivedString::resolve_from_str(self.route_reason, resolver.route_reason, route_reason);
        self.timings.resolve(resolver.timings, timings);
        let (hits, len) = resolver.hits;
        resolve_recalled_body(len, hits, body);
    }
}

impl<H, S> Serialize<S> for RecalledResponseRef<'_, H>
where
    H: RecallHitSource,
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    /// The out-of-line parts in the owned derive's order: the status's
    /// reason, the route reason, then the hits.
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        Ok(RecalledResponseResolver {
            status: self.status().serialize(serializer)?,
            route: self.route.serialize(serializer)?,
            route_reason: ArchivedString::serialize_from_str(self.route_reason, serializer)?,
            timings: self.timings.serialize(serializer)?,
            hits: serialize_walked(|| self.hits.iter().map(HitRef), serializer)?,
        })
    }
}

impl<'a, H> RecalledResponseRef<'a, H> {
    fn status(&self) -> StatusRef<'a> {
        match self.degraded {
            None => StatusRef::Ok,
            Some(reason) => StatusRef::Degraded { reason },
        }
    }
}

/// `Status::Ok` or `Status::Degraded` over a borrowed reason (same
/// variants, same order, so the same tags as the owned `Status`).
#[derive(Archive, Serialize)]
#[rkyv(as = ArchivedStatus)]
enum StatusRef<'a> {
    Ok,
    Degraded {
        #[rkyv(with = AsArchivedString)]
        reason: &'a str,
    },
}

/// `ResponseBody::Recalled`'s tag: its position among `ResponseBody`'s
/// variants (rkyv numbers an archived enum's variants in order). The
/// round-trip test fails if that order changes.
const RECALLED_TAG: u8 = 3;

/// How a `#[repr(u8)]` enum lays out its `Recalled(Vec<RecallHit>)` variant.
#[repr(C)]
struct ArchivedRecalledVariant {
    tag: u8,
    hits: ArchivedVec<ArchivedRecallHit>,
}

/// Writes `ResponseBody::Recalled` of `len` hits whose elements `hits` placed.
fn resolve_recalled_body(len: usize, hits: VecResolver, out: Place<ArchivedResponseBody>) {
    // rkyv archives `ResponseBody` as a `#[repr(u8)]` enum, which Rust lays
    // out (RFC 2195) as a union of `#[repr(C)]` structs, each the `u8` tag
    // followed by the variant's fields: for `Recalled`, exactly
    // `ArchivedRecalledVariant` (no larger than the enum, same alignment or less).
    // SAFETY: the layouts match (above) and the tag written is `Recalled`'s,
    // so the bytes are a valid `ArchivedResponseBody`.
    let out = unsafe { out.cast_unchecked::<ArchivedRecalledVariant>() };
    munge!(let ArchivedRecalledVariant { tag, hits: out_hits } = out);
    tag.write(RECALLED_TAG);
    ArchivedVec::resolve_from_len(len, hits, out_hits);
}

/// A hit, serialized as an `ArchivedRecallHit`.
struct HitRef<'h, H>(&'h H);

/// The out-of-line parts of a hit.
struct HitResolver {
    text: StringResolver,
    namespace: StringResolver,
    tags: (VecResolver, usize),
    why: (VecResolver, usize),
}

impl<H: RecallHitSource> Archive for HitRef<'_, H> {
    type Archived = ArchivedRecallHit;
    type Resolver = HitResolver;

    fn resolve(&self, resolver: HitResolver, out: Place<ArchivedRecallHit>) {
        let hit = self.0;
        munge!(let ArchivedRecallHit { id, score, text, namespace, tags, created_at_ms, why } = out);
        hit.id().resolve((), id);
        hit.score().resolve((), score);
        ArchivedString::resolve_from_str(hit.text(), resolver.text, text);
        ArchivedString::resolve_from_str(hit.namespace(), resolver.namespace, namespace);
        ArchivedVec::resolve_from_len(resolver.tags.1, resolver.tags.0, tags);
        hit.created_at_ms().resolve((), created_at_ms);
        ArchivedVec::resolve_from_len(resolver.why.1, resolver.why.0, why);
    }
}

impl<H, S> Serialize<S> for HitRef<'_, H>
where
    H: RecallHitSource,
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    /// In `RecallHit`'s field order: text, namespace, tags, why.
    fn serialize(&self, serializer: &mut S) -> Result<HitResolver, S::Error> {
        let hit = self.0;
        Ok(HitResolver {
            text: ArchivedString::serialize_from_str(hit.text(), serializer)?,
            namespace: ArchivedString::serialize_from_str(hit.namespace(), serializer)?,
            tags: serialize_walked(|| hit.tags().map(TagRef), serializer)?,
            why: serialize_walked(|| hit.signals().map(SignalRef), serializer)?,
        })
    }
}

/// A tag, serialized as an `ArchivedMemoryTag`.
struct TagRef<'t>((&'t str, &'t str));

impl Archive for TagRef<'_> {
    type Archived = ArchivedMemoryTag;
    type Resolver = [StringResolver; 2];

    fn resolve(&self, [key_resolver, value_resolver]: Self::Resolver, out: Place<ArchivedMemoryTag>) {
        let (key, value) = self.0;
        munge!(let ArchivedMemoryTag { key: out_key, value: out_value } = out);
        ArchivedString::resolve_from_str(key, key_resolver, out_key);
        ArchivedString::resolve_from_str(value, value_resolver, out_value);
    }
}

impl<S> Serialize<S> for TagRef<'_>
where
    S: Fallible + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        let (key, value) = self.0;
        Ok([
            ArchivedString::serialize_from_str(key, serializer)?,
            ArchivedString::serialize_from_str(value, serializer)?,
        ])
    }
}

/// A signal, serialized as an `ArchivedSignal`.
struct SignalRef<'t>((&'t str, f32));

impl Archive for SignalRef<'_> {
    type Archived = ArchivedSignal;
    type Resolver = StringResolver;

    fn resolve(&self, resolver: StringResolver, out: Place<ArchivedSignal>) {
        let (name, value) = self.0;
        munge!(let ArchivedSignal { name: out_name, value: out_value } = out);
        ArchivedString::resolve_from_str(name, resolver, out_name);
        value.resolve((), out_value);
    }
}

impl<S> Serialize<S> for SignalRef<'_>
where
    S: Fallible + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<StringResolver, S::Error> {
        ArchivedString::serialize_from_str(self.0.0, serializer)
    }
}

/// A borrowed `&str` archived as an `ArchivedString` (what a `String` becomes).
struct AsArchivedString;

impl ArchiveWith<&str> for AsArchivedString {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve_with(field: &&str, resolver: StringResolver, out: Place<ArchivedString>) {
        ArchivedString::resolve_from_str(field, resolver, out);
    }
}

impl<S> SerializeWith<&str, S> for AsArchivedString
where
    S: Fallible + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(field: &&str, serializer: &mut S) -> Result<StringResolver, S::Error> {
        ArchivedString::serialize_from_str(field, serializer)
    }
}

/// Serializes the items `walk` yields as an `ArchivedVec`, the way an owned
/// `Vec` of them is (each item's out-of-line parts, then the elements,
/// aligned): walked three times (count, parts, elements) instead of being
/// collected. Returns the resolver and the length.
fn serialize_walked<U, I, S>(walk: impl Fn() -> I, serializer: &mut S) -> Result<(VecResolver, usize), S::Error>
where
    I: Iterator<Item = U>,
    U: Serialize<S>,
    S: Fallible + Allocator + Writer + ?Sized,
{
    let len = walk().count();
    SerVec::<U::Resolver>::with_capacity(serializer, len, |resolvers, serializer| {
        for item in walk().take(len) {
            resolvers.push(item.serialize(serializer)?);
        }
        let pos = serializer.align_for::<U::Archived>()?;
        for (item, resolver) in walk().zip(resolvers.drain()) {
            // Every walk yields the same items, and each element written
            // advances the writer by the element's size, a multiple of its alignment.
            // SAFETY: `resolver` came from serializing this same item, and the
            // writer is aligned for `U::Archived` (aligned above, kept by each element).
            unsafe { serializer.resolve_aligned(&item, resolver)? };
        }
        Ok((VecResolver::from_pos(pos), len))
    })?
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{MemoryTag, RecallHit, Response, ResponseBody, Signal, Status, access_response, encode_to_vec};
    use super::*;

    impl RecallHitSource for RecallHit {
        fn id(&self) -> u64 {
            self.id
        }
        fn score(&self) -> f32 {
            self.score
        }
        fn text(&self) -> &str {
            &self.text
        }
        fn namespace(&self) -> &str {
            &self.namespace
        }
        fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
            self.tags.iter().map(|t| (t.key.as_str(), t.value.as_str()))
        }
        fn created_at_ms(&self) -> i64 {
            self.created_at_ms
        }
        fn signals(&self) -> impl Iterator<Item = (&str, f32)> {
            self.why.iter().map(|s| (s.name.as_str(), s.value))
        }
    }

    /// Strings around the inline limit (8 bytes) and past it, some not ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,12}", "[a-z ]{0,300}"]
    }

    fn hit() -> impl Strategy<Value = RecallHit> {
        let tags = prop::collection::vec((text(), text()), 0..4);
        let why = prop::collection::vec((text(), any::<f32>()), 0..9);
        (any::<u64>(), any::<f32>(), text(), text(), tags, any::<i64>(), why).prop_map(
            |(id, score, text, namespace, tags, created_at_ms, why)| RecallHit {
                id,
                score,
                text,
                namespace,
                tags: (tags.into_iter())
                    .map(|(key, value)| MemoryTag { key, value })
                    .collect(),
                created_at_ms,
                why: why.into_iter().map(|(name, value)| Signal { name, value }).collect(),
            },
        )
    }

    fn route() -> impl Strategy<Value = Route> {
        prop_oneof![
            Just(Route::None),
            Just(Route::CacheOnly),
            Just(Route::SmartRouting),
            Just(Route::FullPipeline),
            Just(Route::MaximumIntelligence),
        ]
    }

    fn owned(
        request_id: u64,
        degraded: &Option<String>,
        route: Route,
        reason: &str,
        timings: ServerTimings,
        hits: &[RecallHit],
    ) -> Response {
        Response {
            request_id,
            status: match degraded {
                None => Status::Ok,
                Some(reason) => Status::Degraded { reason: reason.clone() },
            },
            route,
            route_reason: reason.to_owned(),
            timings,
            body: ResponseBody::Recalled(hits.to_vec()),
        }
    }

    proptest! {
        // What lets the client stay unchanged: the borrowed mirror writes the
        // very bytes the owned `Response` does (and they decode as one).
        #[test]
        fn the_borrowed_answer_encodes_byte_for_byte_as_the_owned_one(
            request_id in any::<u64>(),
            degraded in prop::option::of(text()),
            route in route(),
            reason in text(),
            timings in (any::<u64>(), any::<u64>()),
            hits in prop::collection::vec(hit(), 0..6),
        ) {
            let timings = ServerTimings { queued_ns: timings.0, handled_ns: timings.1 };
            let owned = owned(request_id, &degraded, route, &reason, timings, &hits);
            let borrowed = RecalledResponseRef {
                request_id,
                degraded: degraded.as_deref(),
                route,
                route_reason: &reason,
                timings,
                hits: &hits,
            };
            let expected = encode_to_vec(&owned);
            let written = encode_to_vec(&borrowed);
            prop_assert_eq!(written.as_slice(), expected.as_slice());
            let decoded = access_response(&written).expect("a valid response");
            let back: Response = rkyv::deserialize::<_, rkyv::rancor::Error>(decoded).expect("deserializes");
            // NaN != NaN: compare the re-encoded bytes, not the values.
            let again = encode_to_vec(&back);
            prop_assert_eq!(again.as_slice(), expected.as_slice());
        }
    }
}
