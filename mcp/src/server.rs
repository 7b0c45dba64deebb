//! The MCP server: five tools on the official Rust SDK (`rmcp`), each a
//! thin step from arguments (`args`) through one nexusd call (`daemon`) to a
//! small JSON answer (`shape`).
//!
//! Failures follow the MCP spec (2025-11-25: input validation errors are
//! tool execution errors, so the model can correct its call) and the SDK,
//! which reports arguments that do not fit the schema that way: arguments
//! that cannot be used, and calls nexusd refused or could not answer, are
//! tool results with `isError: true` and one line of text (the argument and
//! its fix, or nexusd's own message via `failure`). Only what never reaches
//! a tool, such as an unknown tool name, is a JSON-RPC error (the SDK's).
//! Every answer is JSON, as text content and as structured content. The
//! tools' annotations tell a host which ones only read (recall, stats) and
//! which one deletes (forget), for hosts that ask before destructive calls.

use std::sync::Arc;

use nexus_client::{Client, ClientError};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, InitializeResult, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde_json::{Value, json};

use crate::args::{ArgError, FeedbackArgs, ForgetArgs, RecallArgs, RememberArgs};
use crate::daemon::Daemon;
use crate::{failure, shape};

/// What the host may pass on to its model about this server as a whole.
const INSTRUCTIONS: &str = "A long-term memory that persists across conversations. Call `recall` before answering \
when earlier conversations may hold something relevant (the user's preferences, facts about people and projects, \
past decisions); call `remember` when the user states something worth knowing next time; give `feedback` on \
recalled memories that helped or did not; `forget` what the user asks to be forgotten.";

const REMEMBER: &str = "Store a fact, preference or event worth recalling in later turns or later conversations \
(e.g. \"The user's cat is called Miso\", \"The user prefers tea to coffee\"). Use it when the user tells you \
something about themselves, their work or people they know that would help next time. Write each memory as one \
self-contained statement; give a `key` for facts that may change, so a new value replaces the old. Returns the \
memory's id.";

const RECALL: &str = "Find stored memories relevant to a question or topic, best first, by meaning and by words. \
Use it before answering whenever earlier conversations may hold something relevant: what the user prefers, what \
was decided, who someone is. Returns `recall_id` (for `feedback`) and results with id, text, score, created_at, \
tags and a short reason (the factors that ranked it).";

const FORGET: &str = "Delete memories permanently: the memories with the given `ids` (from recall results), or \
every memory of a `namespace`. Use it only when the user asks to forget something or a memory is wrong. Returns \
how many memories were deleted.";

const FEEDBACK: &str = "Tell the memory whether a recalled memory was useful for answering (true) or irrelevant \
(false), naming the memory's `id` and the `recall_id` of the recall that returned it. Future recalls rank useful \
memories higher.";

const STATS: &str = "A short summary of the memory store: how many memories and namespaces it holds, how recalls \
were answered (per route, cache hit rate) and how long it has run. Use it when asked about the memory itself, \
not to find memories.";

/// The server: one nexusd connection, the namespace calls default to, and
/// the tools.
#[derive(Clone)]
pub struct NexusServer {
    daemon: Daemon,
    default_namespace: Arc<str>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl NexusServer {
    /// A server over `daemon`; tool calls that name no namespace use
    /// `default_namespace`.
    pub fn new(daemon: Daemon, default_namespace: &str) -> Self {
        Self {
            daemon,
            default_namespace: Arc::from(default_namespace),
            tool_router: Self::tool_router(),
        }
    }

    /// Stores one memory.
    #[tool(description = REMEMBER, annotations(title = "Remember", read_only_hint = false, destructive_hint = false, open_world_hint = false))]
    pub async fn remember(&self, Parameters(args): Parameters<RememberArgs>) -> CallToolResult {
        let memory = args.into_memory(&self.default_namespace);
        let namespace = memory
            .as_ref()
            .map(|memory| memory.namespace.clone())
            .unwrap_or_default();
        self.run(
            "remember",
            memory,
            |client, memory| client.remember_report(vec![memory.clone()]),
            |report| shape::remember_json(&report, &namespace),
        )
        .await
    }

    /// The best memories for a query.
    #[tool(description = RECALL, annotations(title = "Recall", read_only_hint = true, open_world_hint = false))]
    pub async fn recall(&self, Parameters(args): Parameters<RecallArgs>) -> CallToolResult {
        let request = args.into_request(&self.default_namespace);
        self.run(
            "recall",
            request,
            |client, request| client.recall_answer(request.clone()),
            |answer| shape::recall_json(&answer),
        )
        .await
    }

    /// Deletes memories by id or a whole namespace.
    #[tool(description = FORGET, annotations(title = "Forget", destructive_hint = true, idempotent_hint = true, open_world_hint = false))]
    pub async fn forget(&self, Parameters(args): Parameters<ForgetArgs>) -> CallToolResult {
        self.run(
            "forget",
            args.into_request(),
            |client, request| client.forget(request.clone()),
            |forgotten| json!({ "forgotten": forgotten }),
        )
        .await
    }

    /// Records whether a recalled memory helped.
    #[tool(description = FEEDBACK, annotations(title = "Feedback", read_only_hint = false, destructive_hint = false, open_world_hint = false))]
    pub async fn feedback(&self, Parameters(args): Parameters<FeedbackArgs>) -> CallToolResult {
        let request = args.into_request();
        let echo = json!({
            "recorded": true,
            "memory_id": request.memory_id,
            "recall_id": request.recall_request_id,
            "useful": request.useful,
        });
        self.run(
            "feedback",
            Ok(request),
            |client, request| client.feedback(request.memory_id, request.recall_request_id, request.useful),
            |()| echo,
        )
        .await
    }

    /// A compact summary of nexusd's counters.
    #[tool(description = STATS, annotations(title = "Stats", read_only_hint = true, open_world_hint = false))]
    pub async fn stats(&self) -> CallToolResult {
        self.run(
            "stats",
            Ok(()),
            |client, ()| client.stats(),
            |stats| shape::stats_json(&stats),
        )
        .await
    }

    /// One tool call: refuses unusable arguments without calling nexusd,
    /// else makes the call and shapes its answer, or words its failure.
    async fn run<R, T>(
        &self,
        operation: &'static str,
        request: Result<R, ArgError>,
        call: impl Fn(&Client, &R) -> Result<T, ClientError> + Send + 'static,
        shape: impl FnOnce(T) -> Value,
    ) -> CallToolResult
    where
        R: Send + 'static,
        T: Send + 'static,
    {
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                let line = format!("invalid arguments for {operation}: {error} (nothing was sent to nexusd)");
                return CallToolResult::error(vec![ContentBlock::text(line)]);
            }
        };
        match self.daemon.call(move |client| call(client, &request)).await {
            Ok(answer) => CallToolResult::structured(shape(answer)),
            Err(error) => {
                let line = failure::line(operation, &error, self.daemon.socket());
                tracing::warn!(operation, %line, "tool call failed");
                CallToolResult::error(vec![ContentBlock::text(line)])
            }
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for NexusServer {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("nexus-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}
