use serde_json::json;

use super::*;

fn container() -> Json {
    json!({
        "Id": "0123456789abcdef",
        "Name": "/web",
        "Args": ["-c", "sleep 100"],
        "Config": {"Labels": {"tier": "front", "app": "shop"}},
        "NetworkSettings": {
            "IPAddress": "172.17.0.2",
            "Networks": {
                "net": {"IPAddress": "10.0.0.2", "Aliases": ["db"]},
                "bridge": {"IPAddress": "172.17.0.2", "Aliases": null},
            },
        },
    })
}

fn r(src: &str) -> String {
    render(src, &container()).unwrap()
}

#[test]
fn dockers_documented_inspect_examples_render_as_docker_renders_them() {
    assert_eq!(
        r("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"),
        "172.17.0.210.0.0.2",
        "range over a map goes in sorted key order"
    );
    assert_eq!(
        r(r#"{{ (index .NetworkSettings.Networks "net").IPAddress }}"#),
        "10.0.0.2"
    );
    assert_eq!(r(r#"{{join .Args " , "}}"#), "-c , sleep 100");
    assert_eq!(
        r("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}} {{end}}"),
        "app=shop tier=front "
    );
    assert_eq!(
        r("{{.Name}} {{if .Config}}has config{{end}}"),
        "/web has config"
    );
    assert_eq!(r("{{len .Args}}"), "2");
    assert_eq!(r("{{.Missing}}"), "<no value>");
}

#[test]
fn json_keeps_the_documents_field_order_and_sorts_computed_maps() {
    assert_eq!(
        r("{{json .NetworkSettings.Networks.net}}"),
        r#"{"IPAddress":"10.0.0.2","Aliases":["db"]}"#
    );
    assert_eq!(r("{{json .Args}}"), r#"["-c","sleep 100"]"#);
    assert_eq!(r("{{json .Nothing}}"), "null");
    assert_eq!(r(r#"{{json (split "a:b" ":")}}"#), r#"["a","b"]"#);
}

#[test]
fn string_functions_behave_as_the_docker_clis() {
    assert_eq!(
        r(r#"{{upper "abc"}} {{lower "ABC"}} {{title "hello big world"}}"#),
        "ABC abc Hello Big World"
    );
    assert_eq!(r(r#"{{split "a:b:c" ":"}}"#), "[a b c]");
    assert_eq!(r(r#"[{{pad "x" 2 1}}][{{pad "" 2 1}}]"#), "[  x ][]");
    assert_eq!(
        r(r#"{{truncate "abcdef" 3}}|{{truncate "ab" 3}}"#),
        "abc|ab"
    );
    assert_eq!(r(r#"{{println "a" "b"}}"#), "a b\n");
    assert_eq!(r(r#"{{.Name | printf "%q"}}"#), r#""/web""#);
}

#[test]
fn bad_templates_are_refused_with_the_reason() {
    let e = render("{{.Name", &container()).unwrap_err();
    assert!(matches!(e, TemplateError::Parse(_)), "{e}");
    let e = render("{{nosuch .Name}}", &container()).unwrap_err();
    assert!(e.to_string().contains("nosuch"), "{e}");
}

#[test]
fn list_formats_follow_dockers_table_and_json_shorthands() {
    let default = r"table {{.ID}}\t{{.Name}}";
    assert_eq!(
        ListFormat::parse("", default),
        ListFormat::Table("{{.ID}}\t{{.Name}}".into())
    );
    assert_eq!(
        ListFormat::parse("table", default),
        ListFormat::parse("", default)
    );
    assert_eq!(
        ListFormat::parse("json", default),
        ListFormat::Rows("{{json .}}".into())
    );
    assert_eq!(
        ListFormat::parse(r"table {{.Name}}\t{{.ID}}", default),
        ListFormat::Table("{{.Name}}\t{{.ID}}".into())
    );
    assert_eq!(
        ListFormat::parse("{{.ID}}", default),
        ListFormat::Rows("{{.ID}}".into())
    );

    let header = json!({"ID": "NETWORK ID", "Name": "NAME"});
    let rows = [
        json!({"ID": "0123456789ab", "Name": "bridge"}),
        json!({"ID": "ba9876543210", "Name": "a-much-longer-name"}),
    ];
    let table = render_list(
        &ListFormat::parse(r"table {{.Name}}\t{{upper .ID}}", default),
        &header,
        &rows,
    )
    .unwrap();
    assert_eq!(
        table,
        "NAME                 NETWORK ID\nbridge               0123456789AB\na-much-longer-name   BA9876543210\n"
    );
    let json_rows = render_list(&ListFormat::parse("json", default), &header, &rows[..1]).unwrap();
    assert_eq!(json_rows, "{\"ID\":\"0123456789ab\",\"Name\":\"bridge\"}\n");
}
