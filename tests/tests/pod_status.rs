//! The agent owns its pods' status: a status someone else wrote over (as
//! the node lifecycle controller does when the node went silent) is put
//! right once the agent sees it.

use hawser_tests::nodes::{OneNode, test_server_command};
use hawser_tests::poll_until;
use std::time::Duration;

fn ready(node: &OneNode) -> Option<bool> {
    let p = node.kubectl_json(&["get", "pod", "owned", "-o", "json"]);
    p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready").map(|c| c["status"] == "True")
}

#[test]
fn a_status_written_over_by_someone_else_is_restored() {
    let node = OneNode::start(&[]);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: owned\nspec:\n  containers:\n  - name: web\n    image: hawser-test-server\n    command: [\"{}\"]\n",
        test_server_command()
    );
    node.apply("owned.yaml", &manifest, &[]);
    poll_until(Duration::from_secs(60), "pod Ready", || (ready(&node) == Some(true)).then_some(()));
    let not_ready = r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"NodeNotReady"}]}}"#;
    node.kubectl_ok(&["patch", "pod", "owned", "--subresource=status", "--type=merge", "-p", not_ready]);
    poll_until(Duration::from_secs(15), "the agent restores Ready", || (ready(&node) == Some(true)).then_some(()));
}
