//! The cluster's secrets, kept in one directory:
//!
//! | file | what | who needs it |
//! | --- | --- | --- |
//! | `cluster-id` | the cluster's name, inside every sealed gossip packet | every node |
//! | `ca.pem` | the cluster CA's certificate: peers must chain to it | every node |
//! | `ca.key` | the CA's private key: issues node certificates | only `cluster add-node` (keep it off the nodes) |
//! | `gossip.key` | 32 random bytes (hex): seals gossip | every node |
//! | `admin-token` | the admin API's bearer token (scope `admin`) | every node, and its operators |
//! | `deploy-token`, `read-token` | tokens of the `deploy` and `read` scopes | every node; CI pipelines, dashboards |
//! | `nodes/ID/node.pem`, `node.key` | node ID's certificate (its only DNS name is ID) and key | node ID |
//!
//! `nanogrid cluster init DIR` writes the first five once; `nanogrid cluster add-node ID
//! DIR` issues a node's certificate. A node reads them with [`ClusterSecrets::load`].

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use nanogrid_wire::seal::GossipKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub const CLUSTER_ID: &str = "cluster-id";
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const GOSSIP_KEY: &str = "gossip.key";
pub const ADMIN_TOKEN: &str = "admin-token";
pub const DEPLOY_TOKEN: &str = "deploy-token";
pub const READ_TOKEN: &str = "read-token";
pub const NODE_CERT: &str = "node.pem";
pub const NODE_KEY: &str = "node.key";

/// How long certificates are valid. Node certificates are re-issued with `add-node
/// --force`; a node warns when its certificate has less than 30 days left.
const CA_YEARS: i64 = 20;
const NODE_YEARS: i64 = 5;

/// What one node loads from the cluster directory.
pub struct ClusterSecrets {
    pub dir: PathBuf,
    pub cluster_id: String,
    pub gossip_key: GossipKey,
    pub ca: CertificateDer<'static>,
    pub node_id: String,
    pub node_cert: CertificateDer<'static>,
    pub node_key: PrivateKeyDer<'static>,
    /// The admin API's tokens, when the directory has them.
    pub admin_token: Option<String>,
    pub deploy_token: Option<String>,
    pub read_token: Option<String>,
    /// When the node certificate expires (seconds since the epoch).
    pub node_cert_expires: i64,
}

impl std::fmt::Debug for ClusterSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecrets").field("dir", &self.dir).field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// A node id must be usable as a DNS name in its certificate: 1 to 63 lowercase letters,
/// digits and '-', starting and ending with a letter or digit (a Kubernetes pod name fits).
pub fn validate_node_id(id: &str) -> Result<(), String> {
    let ok_chars = id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = id.bytes().next().is_some_and(|b| b != b'-') && id.bytes().last().is_some_and(|b| b != b'-');
    if id.is_empty() || id.len() > 63 || !ok_chars || !ok_ends {
        return Err(format!(
            "node id {id:?} is not valid in a cluster: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. n1, node-2)"
        ));
    }
    Ok(())
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    write_file(path, text, 0o600)
}

fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("the system's random source failed: {e}"))?;
    Ok(hex::encode(b))
}

fn years_from_now(years: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(365 * years)
}

/// `nanogrid cluster init DIR`: a new CA, gossip key, cluster id and admin token.
/// Refuses to touch a directory that already holds a cluster.
pub fn init(dir: &Path) -> anyhow::Result<String> {
    if dir.join(CA_CERT).exists() || dir.join(GOSSIP_KEY).exists() {
        bail!(
            "{} already holds a cluster's secrets; a second CA or gossip key would split the cluster. Use another directory, or `nanogrid cluster add-node ID {}` to add a node",
            dir.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("nodes")).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {} to its owner", dir.display()))?;
    let cluster_id = format!("ng-{}", random_hex(8)?);
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "nanogrid");
    params.distinguished_name.push(DnType::CommonName, format!("nanogrid cluster CA {cluster_id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = years_from_now(CA_YEARS);
    let cert = params.self_signed(&key).context("signing the CA certificate")?;
    write_file(&dir.join(CLUSTER_ID), &format!("{cluster_id}\n"), 0o644)?;
    write_file(&dir.join(CA_CERT), &cert.pem(), 0o644)?;
    write_secret(&dir.join(CA_KEY), &key.serialize_pem())?;
    let gossip = GossipKey::generate()?;
    write_secret(&dir.join(GOSSIP_KEY), &format!("{}\n", gossip.to_hex()))?;
    for token in [ADMIN_TOKEN, DEPLOY_TOKEN, READ_TOKEN] {
        write_secret(&dir.join(token), &format!("{}\n", random_hex(32)?))?;
    }
    Ok(cluster_id)
}

/// `nanogrid cluster add-node ID DIR`: issue node `id`'s certificate into `DIR/nodes/ID`.
/// With `force`, an existing certificate is replaced (re-issue before it expires, or
/// after its key leaked).
pub fn add_node(dir: &Path, id: &str, force: bool) -> anyhow::Result<PathBuf> {
    validate_node_id(id).map_err(anyhow::Error::msg)?;
    let ca_pem = read(dir, CA_CERT)?;
    let ca_key_pem = std::fs::read_to_string(dir.join(CA_KEY)).with_context(|| {
        format!(
            "reading {}: issuing a node certificate needs the CA key (run add-node where `cluster init` ran)",
            dir.join(CA_KEY).display()
        )
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).with_context(|| format!("{} is not a private key", CA_KEY))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, ca_key).with_context(|| format!("{CA_CERT} is not a certificate"))?;
    let out = dir.join("nodes").join(id);
    if out.join(NODE_CERT).exists() {
        if !force {
            bail!("node {id} already has a certificate in {}; pass --force to issue a new one", out.display());
        }
        std::fs::remove_file(out.join(NODE_CERT))?;
        let _ = std::fs::remove_file(out.join(NODE_KEY));
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let key = KeyPair::generate().context("generating the node key")?;
    let mut params = CertificateParams::new(vec![id.to_string()]).context("the node id as a DNS name")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "nanogrid");
    params.distinguished_name.push(DnType::CommonName, id);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = years_from_now(NODE_YEARS);
    let cert = params.signed_by(&key, &issuer).context("signing the node certificate")?;
    write_file(&out.join(NODE_CERT), &cert.pem(), 0o644)?;
    write_secret(&out.join(NODE_KEY), &key.serialize_pem())?;
    Ok(out)
}

fn read(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: is {} a cluster directory? Create one with `nanogrid cluster init {}`",
            path.display(),
            dir.display(),
            dir.display()
        )
    })
}

fn read_path(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Where node `node_id`'s certificate and key are: `nodes/ID/node.{pem,key}` as `cluster
/// add-node` writes them, or flat as `ID.node.pem` and `ID.node.key` beside the cluster
/// files (a Kubernetes Secret or a Compose secret mounts as one flat folder).
fn node_files(dir: &Path, node_id: &str) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let nested = dir.join("nodes").join(node_id);
    if nested.join(NODE_CERT).exists() {
        return Ok((nested.join(NODE_CERT), nested.join(NODE_KEY)));
    }
    let flat = (dir.join(format!("{node_id}.{NODE_CERT}")), dir.join(format!("{node_id}.{NODE_KEY}")));
    if flat.0.exists() {
        return Ok(flat);
    }
    bail!(
        "there is no certificate for node {node_id} in {} (nor {}): run `nanogrid cluster add-node {node_id} {}` where the CA key is, and copy {} to this machine",
        nested.display(),
        flat.0.display(),
        dir.display(),
        nested.display()
    )
}

/// Secret files other local users can read are worth a warning (not a refusal: some
/// deployments mount them through a volume whose modes they do not choose).
fn warn_if_readable(path: &Path) {
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(file = %path.display(), mode = format!("{:o}", m.permissions().mode() & 0o777), "a secret file is readable by other users; chmod 600 it");
    }
}

impl ClusterSecrets {
    /// This node's TLS settings for peer connections, both directions.
    pub fn peer_tls(&self) -> anyhow::Result<super::tls::PeerTls> {
        super::tls::PeerTls::new(&self.ca, &self.node_cert, &self.node_key)
    }

    /// Load what node `node_id` needs from `dir`, checking that its certificate chains to
    /// the cluster CA and names `node_id`.
    pub fn load(dir: &Path, node_id: &str) -> anyhow::Result<ClusterSecrets> {
        validate_node_id(node_id).map_err(anyhow::Error::msg)?;
        let cluster_id = read(dir, CLUSTER_ID)?.trim().to_string();
        if cluster_id.is_empty() || cluster_id.len() > nanogrid_wire::seal::MAX_CLUSTER_ID {
            bail!("{} must hold a cluster id of 1 to 255 bytes", dir.join(CLUSTER_ID).display());
        }
        let gossip_key = GossipKey::from_hex(&read(dir, GOSSIP_KEY)?)
            .with_context(|| format!("{} is not a gossip key", dir.join(GOSSIP_KEY).display()))?;
        warn_if_readable(&dir.join(GOSSIP_KEY));
        let ca = CertificateDer::from_pem_slice(read(dir, CA_CERT)?.as_bytes())
            .with_context(|| format!("{} is not a PEM certificate", dir.join(CA_CERT).display()))?;
        let (cert_path, key_path) = node_files(dir, node_id)?;
        let node_cert = CertificateDer::from_pem_slice(read_path(&cert_path)?.as_bytes())
            .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
        let node_key = PrivateKeyDer::from_pem_slice(read_path(&key_path)?.as_bytes())
            .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
        warn_if_readable(&key_path);
        let token = |name: &str| {
            let t = std::fs::read_to_string(dir.join(name)).ok().map(|t| t.trim().to_string());
            if t.is_some() {
                warn_if_readable(&dir.join(name));
            }
            t.filter(|t| !t.is_empty())
        };
        let (admin_token, deploy_token, read_token) = (token(ADMIN_TOKEN), token(DEPLOY_TOKEN), token(READ_TOKEN));
        let named = super::tls::identity_of(&node_cert);
        if named.as_deref() != Some(node_id) {
            bail!(
                "{} names node {:?}, not {node_id:?}: start this node with --node-id {}, or issue its own certificate with `nanogrid cluster add-node {node_id} DIR`",
                cert_path.display(),
                named.as_deref().unwrap_or("(none)"),
                named.as_deref().unwrap_or("(none)"),
            );
        }
        super::tls::check_chain(&ca, &node_cert, node_id).with_context(|| {
            format!("{} was not issued by this cluster's CA ({})", cert_path.display(), dir.join(CA_CERT).display())
        })?;
        let node_cert_expires = super::tls::expiry_of(&node_cert).unwrap_or(0);
        Ok(ClusterSecrets {
            dir: dir.to_path_buf(),
            cluster_id,
            gossip_key,
            ca,
            node_id: node_id.to_string(),
            node_cert,
            node_key,
            admin_token,
            deploy_token,
            read_token,
            node_cert_expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_add_node_gives_a_node_what_it_loads() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("c");
        let id = init(&dir).unwrap();
        assert!(id.starts_with("ng-"));
        let err = init(&dir).unwrap_err().to_string();
        assert!(err.contains("already holds a cluster"), "{err}");
        for f in [CA_KEY, GOSSIP_KEY, ADMIN_TOKEN, DEPLOY_TOKEN, READ_TOKEN] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let err = ClusterSecrets::load(&dir, "n1").unwrap_err().to_string();
        assert!(err.contains("cluster add-node n1"), "{err}");
        add_node(&dir, "n1", false).unwrap();
        let err = add_node(&dir, "n1", false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        add_node(&dir, "n1", true).unwrap();
        let s = ClusterSecrets::load(&dir, "n1").unwrap();
        assert_eq!(s.cluster_id, id);
        assert_eq!(s.admin_token.as_deref().map(str::len), Some(64));
        let days = (s.node_cert_expires - time::OffsetDateTime::now_utc().unix_timestamp()) / 86400;
        assert!((NODE_YEARS * 365 - 1..=NODE_YEARS * 365).contains(&days), "expires in {days} days");
        // Another node's files under this node's name are refused.
        add_node(&dir, "n2", false).unwrap();
        std::fs::copy(dir.join("nodes/n2/node.pem"), dir.join("nodes/n1/node.pem")).unwrap();
        let err = format!("{:#}", ClusterSecrets::load(&dir, "n1").unwrap_err());
        assert!(err.contains("names node \"n2\""), "{err}");
    }

    #[test]
    fn a_flat_folder_as_a_kubernetes_secret_mounts_it_loads_too() {
        let d = tempfile::tempdir().unwrap();
        let (made, flat) = (d.path().join("made"), d.path().join("flat"));
        init(&made).unwrap();
        add_node(&made, "nanogrid-0", false).unwrap();
        std::fs::create_dir(&flat).unwrap();
        for f in [CLUSTER_ID, CA_CERT, GOSSIP_KEY, ADMIN_TOKEN] {
            std::fs::copy(made.join(f), flat.join(f)).unwrap();
        }
        let err = format!("{:#}", ClusterSecrets::load(&flat, "nanogrid-0").unwrap_err());
        assert!(err.contains("nanogrid-0.node.pem") && err.contains("cluster add-node nanogrid-0"), "{err}");
        for f in [NODE_CERT, NODE_KEY] {
            std::fs::copy(made.join("nodes/nanogrid-0").join(f), flat.join(format!("nanogrid-0.{f}"))).unwrap();
        }
        let s = ClusterSecrets::load(&flat, "nanogrid-0").unwrap();
        assert_eq!(s.node_id, "nanogrid-0");
        // Another node's flat files are not this node's.
        let err = format!("{:#}", ClusterSecrets::load(&flat, "nanogrid-1").unwrap_err());
        assert!(err.contains("no certificate for node nanogrid-1"), "{err}");
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        init(&a).unwrap();
        init(&b).unwrap();
        add_node(&b, "n1", false).unwrap();
        std::fs::create_dir_all(a.join("nodes/n1")).unwrap();
        for f in [NODE_CERT, NODE_KEY] {
            std::fs::copy(b.join("nodes/n1").join(f), a.join("nodes/n1").join(f)).unwrap();
        }
        let err = format!("{:#}", ClusterSecrets::load(&a, "n1").unwrap_err());
        assert!(err.contains("not issued by this cluster's CA"), "{err}");
    }

    #[test]
    fn node_ids_must_be_dns_names() {
        for ok in ["n1", "node-2", "nanogrid-0", "a"] {
            assert_eq!(validate_node_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "N1", "n_1", "-n", "n-", "n.1", &"x".repeat(64)] {
            assert!(validate_node_id(bad).unwrap_err().contains("lowercase letters"), "{bad}");
        }
    }
}
