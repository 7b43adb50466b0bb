//! S3 (moto) through boto3 and Azure Blob (Azurite) through azure-storage-blob: the objects
//! below a prefix written and read by `objects.py` with the service's own Python SDK.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use integration_tests::{service_url, unique_name};
use serde_json::{Value, json};

use super::native::{Native, from_hex, python, run_client, to_hex};
use super::record::{certstore_writes_native_reads, cleared, native_writes_certstore_reads};

/// The script that drives the SDKs.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/objects.py");

/// The bucket and the container the tests share, each test below a prefix of its own.
const CONTAINER: &str = "certstore-interop";

/// A prefix of a bucket or container.
struct Objects {
    python: PathBuf,
    /// `s3` or `azure`, as `objects.py` takes it.
    kind: &'static str,
    prefix: String,
    url: String,
    /// The SDK's endpoint and credentials.
    env: Vec<(&'static str, String)>,
}

impl Objects {
    fn call(&self, command: Value) -> String {
        let mut python = Command::new(&self.python);
        python.args([SCRIPT, self.kind, CONTAINER, &self.prefix]);
        for (name, value) in &self.env {
            python.env(name, value);
        }
        run_client(&mut python, &command.to_string())
    }
}

impl Native for Objects {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn put(&self, values: &[(String, Vec<u8>)]) {
        let values: Vec<(&str, String)> = values
            .iter()
            .map(|(key, value)| (key.as_str(), to_hex(value)))
            .collect();
        self.call(json!({ "put": values }));
    }

    fn dump(&self) -> BTreeMap<String, Vec<u8>> {
        let found: BTreeMap<String, String> =
            serde_json::from_str(&self.call(json!({ "dump": true }))).unwrap();
        found
            .into_iter()
            .map(|(key, hex)| (key, from_hex(&hex)))
            .collect()
    }

    fn clear(&self) {
        self.call(json!({ "clear": true }));
    }
}

fn s3() -> Option<Objects> {
    let endpoint = service_url("CERTSTORE_TEST_S3_URL")?;
    let python = python("CERTSTORE_TEST_PYTHON_S3", "boto3")?;
    let prefix = unique_name("interop");
    Some(Objects {
        python,
        kind: "s3",
        url: format!(
            "s3://{CONTAINER}/{prefix}?endpoint={endpoint}&region=us-east-1&path_style=true"
        ),
        prefix,
        // The credentials `common::command` gives certstore.
        env: vec![
            ("CERTSTORE_INTEROP_S3_ENDPOINT", endpoint),
            ("AWS_ACCESS_KEY_ID", "certstore".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "certstore-secret".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ],
    })
}

fn azure() -> Option<Objects> {
    let endpoint = service_url("CERTSTORE_TEST_AZURE_URL")?;
    let python = python("CERTSTORE_TEST_PYTHON_AZURE", "azure.storage.blob")?;
    let prefix = unique_name("interop");
    let account = cert_azure::AZURITE_ACCOUNT;
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={};BlobEndpoint={};",
        cert_azure::AZURITE_ACCOUNT_KEY,
        endpoint.trim_end_matches('/')
    );
    Some(Objects {
        python,
        kind: "azure",
        url: format!("azblob://{account}/{CONTAINER}/{prefix}?endpoint={endpoint}"),
        prefix,
        env: vec![("AZURE_STORAGE_CONNECTION_STRING", connection)],
    })
}

#[test]
fn boto3_reads_what_certstore_imported() {
    let Some(s3) = s3() else {
        return;
    };
    let dump = certstore_writes_native_reads(&s3);
    // The import's lock was released (its object deleted) and the conditional-write
    // probe deleted right after it ran: nothing but the record is left.
    assert_eq!(dump.len(), 4, "{:?}", dump.keys());
    cleared(&s3);
}

#[test]
fn certstore_reads_objects_written_with_boto3() {
    if let Some(s3) = s3() {
        native_writes_certstore_reads(&s3);
        cleared(&s3);
    }
}

#[test]
fn azure_sdk_reads_what_certstore_imported() {
    let Some(azure) = azure() else {
        return;
    };
    let dump = certstore_writes_native_reads(&azure);
    // The lock blob of the import's lock stays after release, empty.
    let lock = ".certstore-locks/issue/interop.example";
    assert_eq!(dump.get(lock).map(Vec::len), Some(0), "{:?}", dump.keys());
    assert_eq!(dump.len(), 5, "{:?}", dump.keys());
    cleared(&azure);
}

#[test]
fn certstore_reads_blobs_written_with_the_azure_sdk() {
    if let Some(azure) = azure() {
        native_writes_certstore_reads(&azure);
        cleared(&azure);
    }
}
