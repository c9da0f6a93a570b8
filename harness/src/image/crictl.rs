//! Parsing of `crictl images -o json`, the kubelet's view of the images in containerd.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::ImageError;

/// The top-level object of `crictl images -o json`: a `ListImagesResponse` of the CRI API,
/// rendered by protobuf's JSON mapping.
#[derive(Debug, Deserialize)]
struct ListImagesResponse {
    #[serde(default)]
    images: Option<Vec<CriImage>>,
}

/// One CRI `Image`. Only the names matter here, so every other field is ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CriImage {
    #[serde(default)]
    repo_tags: Option<Vec<Option<String>>>,
    #[serde(default)]
    repo_digests: Option<Vec<Option<String>>>,
}

/// Parses `crictl images -o json` into the set of references present: every entry of
/// `repoTags` (`docker.io/library/foo:1.0`) and `repoDigests` (`docker.io/library/foo@sha256:…`).
///
/// Unknown fields are ignored, and `null` in place of a list or of a list item counts as empty.
/// Returns [`ImageError::InvalidCrictlOutput`] when the input is not a JSON object of that shape.
pub fn parse_crictl_images(json: &[u8]) -> Result<BTreeSet<String>, ImageError> {
    let invalid = |source| ImageError::InvalidCrictlOutput { source };
    // Parsing into a map first rejects a top-level array, which serde would otherwise accept
    // as the fields of the struct in order.
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(invalid)?;
    let response: ListImagesResponse =
        serde_json::from_value(serde_json::Value::Object(object)).map_err(invalid)?;

    let mut references = BTreeSet::new();
    for image in response.images.into_iter().flatten() {
        let names = image
            .repo_tags
            .into_iter()
            .flatten()
            .chain(image.repo_digests.into_iter().flatten())
            .flatten();
        for name in names {
            let name = name.trim();
            if !name.is_empty() {
                references.insert(name.to_owned());
            }
        }
    }
    Ok(references)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output shaped like `k3s crictl images -o json` on a k3s node after an import: pinned
    /// k3s images, the imported image, an image that lost its tag, and null fields.
    const K3S_SAMPLE: &str = r#"{
  "images": [
    {
      "id": "sha256:6270bb605e12e581514ada5fd5b3216f727db55dc87d5889c790e4c760683fee",
      "repoTags": [
        "docker.io/rancher/mirrored-pause:3.6"
      ],
      "repoDigests": [
        "docker.io/rancher/mirrored-pause@sha256:74c4244427b7312c5b901fe0f67cbc53683d06f4f24c6faee65d4182bf0fa893"
      ],
      "size": "301463",
      "uid": null,
      "username": "",
      "spec": null,
      "pinned": true
    },
    {
      "id": "sha256:ead0a4a53df89fd173874b46093b6e62d8c72967bbf606d672c9e8c9b601a4fc",
      "repoTags": [
        "docker.io/rancher/mirrored-coredns-coredns:1.10.1"
      ],
      "repoDigests": [
        "docker.io/rancher/mirrored-coredns-coredns@sha256:a0ead06651cf580044aeb0a0feba63591858fb2e43ade8c9dea45a6a89ae7e5e"
      ],
      "size": "16190758",
      "uid": {
        "value": "65532"
      },
      "username": "",
      "spec": {
        "image": "",
        "annotations": {},
        "userSpecifiedImage": "",
        "runtimeHandler": ""
      },
      "pinned": false
    },
    {
      "id": "sha256:2b7d4f0c5a6e8d9c1b3a5f7e9d0c2b4a6f8e0d1c3b5a7f9e1d3c5b7a9f0e2d4c",
      "repoTags": [
        "docker.io/library/my-operator:1.4.2",
        "example.test/team/my-operator:1.4.2"
      ],
      "repoDigests": [],
      "size": "48211904",
      "uid": null,
      "username": "nonroot",
      "spec": null,
      "pinned": false
    },
    {
      "id": "sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0",
      "repoTags": [],
      "repoDigests": [
        "example.test/team/my-operator@sha256:1c0e5b7a3f9d2e4c6b8a0f1e3d5c7b9a2e4f6d8c0b1a3e5f7d9c2b4a6e8f0d1c"
      ],
      "size": "48211870",
      "uid": null,
      "username": "",
      "spec": null,
      "pinned": false
    },
    {
      "id": "sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
      "repoTags": null,
      "repoDigests": null,
      "size": "1024",
      "uid": null,
      "username": "",
      "spec": null,
      "pinned": false
    }
  ]
}
"#;

    #[test]
    fn k3s_sample_references() {
        let references = parse_crictl_images(K3S_SAMPLE.as_bytes()).unwrap();
        let expected = [
            "docker.io/library/my-operator:1.4.2",
            "docker.io/rancher/mirrored-coredns-coredns:1.10.1",
            "docker.io/rancher/mirrored-coredns-coredns@sha256:a0ead06651cf580044aeb0a0feba63591858fb2e43ade8c9dea45a6a89ae7e5e",
            "docker.io/rancher/mirrored-pause:3.6",
            "docker.io/rancher/mirrored-pause@sha256:74c4244427b7312c5b901fe0f67cbc53683d06f4f24c6faee65d4182bf0fa893",
            "example.test/team/my-operator:1.4.2",
            "example.test/team/my-operator@sha256:1c0e5b7a3f9d2e4c6b8a0f1e3d5c7b9a2e4f6d8c0b1a3e5f7d9c2b4a6e8f0d1c",
        ];
        let actual: Vec<&str> = references.iter().map(String::as_str).collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn empty_and_null_lists() {
        let cases = [
            r#"{"images":[]}"#,
            r#"{"images":null}"#,
            r#"{}"#,
            r#"{"images":[{"id":"sha256:00","repoTags":[null,""],"repoDigests":null}]}"#,
        ];
        for input in cases {
            let references = parse_crictl_images(input.as_bytes())
                .unwrap_or_else(|error| panic!("`{input}` failed: {error}"));
            assert!(references.is_empty(), "`{input}` gave {references:?}");
        }
    }

    #[test]
    fn invalid_output_rejected() {
        let cases = [
            "",
            "IMAGE  TAG  IMAGE ID  SIZE",
            r#"{"images":{}}"#,
            r#"{"images":[{"repoTags":"docker.io/library/foo:1"}]}"#,
            "[]",
        ];
        for input in cases {
            let error = parse_crictl_images(input.as_bytes())
                .expect_err(&format!("`{input}` should be rejected"));
            let message = error.to_string();
            assert!(
                message.contains("crictl images -o json"),
                "message for `{input}`: {message}"
            );
        }
    }
}
