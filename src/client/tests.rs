use super::*;

#[test]
fn same_origin_compares_scheme_host_and_port_with_defaults() {
    let e = Url::parse("https://Tus.example.com/files/").unwrap();
    let yes = [
        "https://tus.example.com/files/1",
        "https://tus.example.com:443/x",
    ];
    let no = [
        "http://tus.example.com/files/1",
        "https://tus.example.com:8443/files/1",
        "https://other.example.com/files/1",
        "/files/1",
    ];
    for u in yes {
        assert!(same_origin(&e, &u.parse().unwrap()), "{u}");
    }
    for u in no {
        assert!(!same_origin(&e, &u.parse().unwrap()), "{u}");
    }
}
