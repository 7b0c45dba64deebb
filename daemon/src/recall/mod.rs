//! Recall: the search engines behind a recall (the pipeline comes later).

pub mod ann;
pub mod lexical;
