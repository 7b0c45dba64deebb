//! The README's client example, compiled with the workspace so it stays true.

use nexus_client::Client;
use nexus_client::wire::{MemoryInput, RecallRequest};

fn main() -> Result<(), nexus_client::ClientError> {
    let client = Client::connect_default()?; // $NEXUS_SOCKET, else the daemon's default socket
    let ids = client.remember(vec![
        MemoryInput::new("agent-1", "The user's cat is called Miso"),
        MemoryInput::new("agent-1", "The user prefers tea to coffee"),
    ])?; // acknowledged once durable (fdatasync)
    let answer = client.recall_answer(RecallRequest::new("agent-1", "what pet does the user have", 3))?;
    println!("stored {ids:?}; route {:?}: {}", answer.route, answer.route_reason);
    for hit in &answer.hits {
        println!("{:.3} {}", hit.score, hit.text);
    }
    if let Some(best) = answer.hits.first() {
        client.feedback(best.id, answer.request_id, true)?; // it helped: ranks it higher next time
    }
    Ok(())
}
