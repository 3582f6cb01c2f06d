//! `nanogrid cluster init|token|k8s-secret|add-node`: a cluster's identity (its CA, node
//! certificates, gossip key and tokens) made and handed out from a directory.

use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// `nanogrid cluster init DIR`.
pub fn cluster_init(dir: &std::path::Path, nodes: &[String], exists_ok: bool) -> anyhow::Result<ExitCode> {
    use crate::transport::secrets as s;
    if exists_ok && dir.join(s::CA_CERT).exists() {
        let id = std::fs::read_to_string(dir.join(s::CLUSTER_ID)).unwrap_or_default();
        println!("cluster {} already in {}; kept", id.trim(), dir.display());
    } else {
        let id = s::init(dir)?;
        println!("created cluster {id} in {}", dir.display());
        println!("  ca.pem, ca.key     the cluster CA (keep ca.key off the nodes: only add-node needs it)");
        println!("  gossip.key         seals gossip between nodes");
        println!(
            "  admin-token        the admin API's token (export NANOGRID_TOKEN=$(cat {}/admin-token))",
            dir.display()
        );
        if nodes.is_empty() {
            println!(
                "next: nanogrid cluster add-node ID {} for each node, then serve --node-id ID --cluster-dir {}",
                dir.display(),
                dir.display()
            );
        }
    }
    for id in nodes.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if dir.join("nodes").join(id).join(s::NODE_CERT).exists() {
            println!("node {id} already has a certificate; kept");
        } else {
            let out = s::add_node(dir, id, false)?;
            println!("issued node {id}'s certificate in {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanogrid cluster token DIR [--scope S]`.
pub fn cluster_token(dir: &std::path::Path, scope: &str) -> anyhow::Result<ExitCode> {
    use crate::transport::secrets as s;
    let file = match scope {
        "admin" => s::ADMIN_TOKEN,
        "deploy" => s::DEPLOY_TOKEN,
        "read" => s::READ_TOKEN,
        other => bail!("--scope {other:?} is not a token scope; use admin, deploy or read"),
    };
    let path = dir.join(file);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}: is {} a cluster directory?", path.display(), dir.display()))?;
    println!("{}", token.trim());
    Ok(ExitCode::SUCCESS)
}

/// `nanogrid cluster k8s-secret DIR`: the Secret manifest (as `stringData`, so no encoding).
pub fn cluster_k8s_secret(dir: &std::path::Path, name: &str) -> anyhow::Result<ExitCode> {
    use crate::transport::secrets as s;
    crate::transport::secrets::validate_node_id(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let mut files: Vec<(String, std::path::PathBuf)> =
        [s::CLUSTER_ID, s::CA_CERT, s::GOSSIP_KEY].iter().map(|f| (f.to_string(), dir.join(f))).collect();
    for f in [s::ADMIN_TOKEN, s::DEPLOY_TOKEN, s::READ_TOKEN] {
        if dir.join(f).exists() {
            files.push((f.to_string(), dir.join(f)));
        }
    }
    let nodes_dir = dir.join("nodes");
    let mut ids: Vec<String> = std::fs::read_dir(&nodes_dir)
        .with_context(|| {
            format!("reading {}: issue node certificates first (`cluster add-node`)", nodes_dir.display())
        })?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    ids.sort();
    for id in &ids {
        for f in [s::NODE_CERT, s::NODE_KEY] {
            files.push((format!("{id}.{f}"), nodes_dir.join(id).join(f)));
        }
    }
    let mut out = format!(
        "# The cluster's secrets for nanogrid nodes {} (no CA key). Made by `nanogrid cluster k8s-secret`.\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: Opaque\nstringData:\n",
        ids.join(", ")
    );
    for (key, path) in files {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        out.push_str(&format!("  {key}: |\n"));
        for line in text.trim_end().lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `nanogrid cluster add-node ID DIR`.
pub fn cluster_add_node(id: &str, dir: &std::path::Path, force: bool) -> anyhow::Result<ExitCode> {
    let out = crate::transport::secrets::add_node(dir, id, force)?;
    println!("issued node {id}'s certificate in {}", out.display());
    println!("a node needs: cluster-id, ca.pem, gossip.key, admin-token and nodes/{id}/ (not ca.key)");
    Ok(ExitCode::SUCCESS)
}
