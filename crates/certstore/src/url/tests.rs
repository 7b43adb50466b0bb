//! Unit tests of storage URL parsing, redaction and the parts a parsed URL tells.

use super::*;

fn target(url: &str) -> Target {
    StorageUrl::parse(url).unwrap().target().clone()
}

#[test]
fn paths_and_files() {
    assert_eq!(
        target("/var/lib/certstore"),
        Target::File {
            path: "/var/lib/certstore".into()
        }
    );
    assert_eq!(
        target("file:///var/lib/cert%20store"),
        Target::File {
            path: "/var/lib/cert store".into()
        }
    );
    assert_eq!(
        target(".certstore"),
        Target::File {
            path: ".certstore".into()
        }
    );
    assert!(StorageUrl::parse("file://").is_err());
    assert!(StorageUrl::parse("  ").is_err());
}

#[test]
fn redis_and_sql_keep_driver_parameters() {
    assert_eq!(
        target("redis://:pw@h:6379/2?namespace=prod&protocol=resp3"),
        Target::Redis {
            url: "redis://:pw@h:6379/2?protocol=resp3".into(),
            namespace: "prod".into()
        }
    );
    assert_eq!(
        target("rediss://h"),
        Target::Redis {
            url: "rediss://h".into(),
            namespace: "certstore".into()
        }
    );
    assert_eq!(
        target("postgres://u:p@h/db?sslmode=require&namespace=n&table_prefix=tls"),
        Target::Sql {
            url: "postgres://u:p@h/db?sslmode=require".into(),
            namespace: "n".into(),
            table_prefix: Some("tls".into())
        }
    );
    let url = StorageUrl::parse("sqlite:certs.db").unwrap();
    assert_eq!(url.backend(), Backend::Sqlite);
    assert_eq!(
        StorageUrl::parse("mariadb://h/d").unwrap().backend(),
        Backend::MySql
    );
    assert!(StorageUrl::parse("mysql://h/d?table_prefix=a;drop").is_err());
    assert!(StorageUrl::parse("redis://h?namespace={x}").is_err());
}

#[test]
fn s3_and_azure() {
    assert_eq!(
        target(
            "s3://certs/prod/eu?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true"
        ),
        Target::S3 {
            bucket: "certs".into(),
            prefix: "prod/eu".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("us-east-1".into()),
            path_style: true
        }
    );
    assert_eq!(
        target("s3://certs"),
        Target::S3 {
            bucket: "certs".into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            path_style: false
        }
    );
    assert_eq!(
        target(
            "azblob://devstoreaccount1/certs/a/b?endpoint=http://127.0.0.1:10000/devstoreaccount1"
        ),
        Target::Azure {
            account: "devstoreaccount1".into(),
            container: "certs".into(),
            prefix: "a/b".into(),
            endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into())
        }
    );
    for bad in [
        "s3://",
        "s3://b?path_style=maybe",
        "s3://b?secret=1",
        "s3://b/../x",
        "azblob://acct",
        "azblob://acct/c?sig=x",
    ] {
        assert!(
            matches!(StorageUrl::parse(bad), Err(UrlError::Invalid { .. })),
            "{bad}"
        );
    }
}

#[test]
fn encrypted_and_unknown() {
    let url = StorageUrl::parse("encrypted+redis://:pw@h/0").unwrap();
    assert!(url.is_encrypted());
    assert_eq!(url.backend(), Backend::Redis);
    assert_eq!(url.redacted(), "encrypted+redis://:***@h/0");
    assert!(StorageUrl::parse("encrypted+encrypted+/x").is_err());
    let err = StorageUrl::parse("ftp://user:pw@h/x").unwrap_err();
    assert!(matches!(err, UrlError::UnknownScheme { ref scheme, .. } if scheme == "ftp"));
    assert!(!err.to_string().contains("pw"), "{err}");
}

#[test]
fn debug_and_errors_hide_secrets() {
    let url = StorageUrl::parse("postgres://app:hunter2@db/c?namespace=n").unwrap();
    assert!(!format!("{url:?}").contains("hunter2"));
    assert!(!format!("{:?}", url.target()).contains("hunter2"));
    assert!(!url.to_string().contains("hunter2"));
    assert_eq!(url.secrets(), vec!["hunter2".to_owned()]);
    let err = StorageUrl::parse("s3://b?endpoint=http://u:hunter2@h&bogus=1").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let sas = StorageUrl::parse("postgres://h/c?password=topsecret").unwrap();
    assert!(sas.secrets().contains(&"topsecret".to_owned()));
}

/// A password with an unencoded `/`, `?` or `#` is read whole: the user-info is not cut
/// short at that character, nothing of it is printed, and all of it is listed as a secret.
#[test]
fn unencoded_passwords_are_read_as_meant() {
    let url = StorageUrl::parse("redis://:S3C/RET?x#y@127.0.0.1:6379/0?namespace=p").unwrap();
    assert_eq!(
        url.target(),
        &Target::Redis {
            url: "redis://:S3C%2FRET%3Fx%23y@127.0.0.1:6379/0".into(),
            namespace: "p".into()
        }
    );
    assert_eq!(url.to_string(), "redis://:***@127.0.0.1:6379/0?namespace=p");
    assert!(url.secrets().contains(&"S3C/RET?x#y".to_owned()));
    assert!(url.secrets().contains(&"S3C%2FRET%3Fx%23y".to_owned()));
    assert_eq!(url.hosts(), vec!["127.0.0.1".to_owned()]);
    let sql = StorageUrl::parse("postgres://app:a?b@db/c?sslmode=require&table_prefix=t").unwrap();
    assert_eq!(
        sql.target(),
        &Target::Sql {
            url: "postgres://app:a%3Fb@db/c?sslmode=require".into(),
            namespace: String::new(),
            table_prefix: Some("t".into())
        }
    );
    assert_eq!(
        sql.driver_params(),
        vec![("sslmode".to_owned(), "require".to_owned())]
    );
    // A password cut short by a strict parser (the path would hold an `@`).
    assert_eq!(
        target("redis://u:123/x@h/0"),
        Target::Redis {
            url: "redis://u:123%2Fx@h/0".into(),
            namespace: "certstore".into()
        }
    );
}

/// The last `@` ends the user-info, so an `@` in a query value must be written
/// `%40`; so written, the URL reaches the driver unchanged.
#[test]
fn an_at_sign_in_a_query_value_is_encoded() {
    let url =
        StorageUrl::parse("postgres://u:pw@db/c?application_name=me%40x&namespace=n").unwrap();
    assert_eq!(
        url.target(),
        &Target::Sql {
            url: "postgres://u:pw@db/c?application_name=me%40x".into(),
            namespace: "n".into(),
            table_prefix: None
        }
    );
    assert_eq!(url.hosts(), vec!["db".to_owned()]);
    assert_eq!(url.secrets(), vec!["pw".to_owned()]);
    let unencoded = StorageUrl::parse("postgres://u:pw@db/c?application_name=me@x").unwrap();
    assert_eq!(unencoded.to_string(), "postgres://u:***@x");
    assert!(!format!("{unencoded:?}").contains("pw"));
}

#[test]
fn hosts_of_network_backends() {
    let hosts = |url: &str| StorageUrl::parse(url).unwrap().hosts();
    assert_eq!(
        hosts("rediss://u:p@cache.internal:6380"),
        vec!["cache.internal"]
    );
    assert_eq!(hosts("mysql://r:p@[::1]:3306/c"), vec!["::1"]);
    assert_eq!(
        hosts("postgres://u:p@h1:5432,h2:5433/db"),
        vec!["h1".to_owned(), "h2".to_owned()]
    );
    assert!(hosts("sqlite:///tmp/x.db").is_empty());
    assert!(hosts("s3://bucket").is_empty());
    assert!(hosts("postgres:///db?host=/run/postgresql").is_empty());
}
