package kubernetes

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// doc is one YAML document of a manifest file.
type doc struct {
	where string // file#index
	raw   []byte
}

// manifests returns every YAML document of the *.yaml files here.
func manifests(t *testing.T) []doc {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests here: %v", err)
	}
	var docs []doc
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, part := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(stripComments(part)) == "" {
				continue
			}
			docs = append(docs, doc{where: f + "#" + string(rune('0'+i)), raw: []byte(part)})
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// object returns the typed API object for a document's apiVersion and kind,
// or nil for a kind this test does not know.
func object(raw []byte) (metav1.TypeMeta, any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return tm, nil, err
	}
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/ConfigMap":
		return tm, &corev1.ConfigMap{}, nil
	case "apps/v1/Deployment":
		return tm, &appsv1.Deployment{}, nil
	}
	return tm, nil, nil
}

// decodeStrict decodes raw into the API type of its kind as the API server
// does (sigs.k8s.io/json: field names match case-sensitively), refusing
// unknown and duplicate fields and values of the wrong type.
func decodeStrict(raw []byte) (any, error) {
	tm, obj, err := object(raw)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, &unknownKind{tm}
	}
	j, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, err
	}
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, err
	}
	if len(strict) > 0 {
		return nil, errors.Join(strict...)
	}
	return obj, nil
}

type unknownKind struct{ tm metav1.TypeMeta }

func (u *unknownKind) Error() string {
	return "unknown apiVersion/kind " + u.tm.APIVersion + "/" + u.tm.Kind + ": teach validate_test.go its type"
}

// decoded holds every manifest object by kind.
type decoded struct {
	configMaps  map[string]*corev1.ConfigMap
	deployments []*appsv1.Deployment
}

func decodeAll(t *testing.T) decoded {
	t.Helper()
	d := decoded{configMaps: map[string]*corev1.ConfigMap{}}
	for _, m := range manifests(t) {
		obj, err := decodeStrict(m.raw)
		if err != nil {
			t.Errorf("%s: %v", m.where, err)
			continue
		}
		var meta metav1.ObjectMeta
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			meta = o.ObjectMeta
			d.configMaps[o.Name] = o
		case *appsv1.Deployment:
			meta = o.ObjectMeta
			d.deployments = append(d.deployments, o)
		}
		for _, e := range validation.IsDNS1123Subdomain(meta.Name) {
			t.Errorf("%s: name %q: %s", m.where, meta.Name, e)
		}
		for k, v := range meta.Labels {
			for _, e := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
				t.Errorf("%s: label %s=%s: %s", m.where, k, v, e)
			}
		}
	}
	if len(d.deployments) == 0 {
		t.Fatal("no Deployment among the manifests")
	}
	return d
}

// TestManifestsDecodeStrictly: every manifest decodes into its Kubernetes
// API type with no unknown field, names and labels are valid, and each
// Deployment's selector matches its pod labels.
func TestManifestsDecodeStrictly(t *testing.T) {
	d := decodeAll(t)
	for _, dep := range d.deployments {
		sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
		if err != nil {
			t.Errorf("deployment %s: selector: %v", dep.Name, err)
			continue
		}
		if !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
			t.Errorf("deployment %s: selector %s does not match the pod labels %v", dep.Name, sel, dep.Spec.Template.Labels)
		}
		names := map[string]bool{}
		for _, c := range allContainers(dep.Spec.Template.Spec) {
			if names[c.Name] {
				t.Errorf("deployment %s: two containers named %s", dep.Name, c.Name)
			}
			names[c.Name] = true
			for _, e := range validation.IsDNS1123Label(c.Name) {
				t.Errorf("deployment %s: container name %q: %s", dep.Name, c.Name, e)
			}
		}
	}
}

// TestStrictDecodingCatchesMistakes: the check refuses a misspelt field, a
// value of the wrong type and a kind it does not know, so a green run
// means something.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	var dep []byte
	for _, m := range manifests(t) {
		if bytes.Contains(m.raw, []byte("kind: Deployment")) {
			dep = m.raw
		}
	}
	for name, bad := range map[string][]byte{
		"misspelt field": bytes.Replace(dep, []byte("readOnlyRootFilesystem:"), []byte("readOnlyRootFileSystem:"), 1),
		"wrong type":     bytes.Replace(dep, []byte("replicas: 1"), []byte("replicas: one"), 1),
		"unknown kind":   bytes.Replace(dep, []byte("kind: Deployment"), []byte("kind: Deploymint"), 1),
	} {
		if bytes.Equal(bad, dep) {
			t.Fatalf("%s: the mutation did not apply", name)
		}
		if _, err := decodeStrict(bad); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func allContainers(spec corev1.PodSpec) []corev1.Container {
	return append(append([]corev1.Container(nil), spec.InitContainers...), spec.Containers...)
}

// privilegeProblems lists what in dep's pod could run with privileges:
// a container that may run as root, gain privileges, hold a capability or
// write its root filesystem; a pod that shares the host's namespaces,
// mounts a host path or gets an API token.
func privilegeProblems(dep *appsv1.Deployment) []string {
	var p []string
	pod := dep.Spec.Template.Spec
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		p = append(p, "shares a host namespace")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		p = append(p, "automountServiceAccountToken is not false")
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			p = append(p, "volume "+v.Name+" is a hostPath")
		}
	}
	podNonRoot := pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot
	if pod.SecurityContext != nil && pod.SecurityContext.RunAsUser != nil && *pod.SecurityContext.RunAsUser == 0 {
		p = append(p, "pod runAsUser 0")
	}
	for _, c := range allContainers(pod) {
		sc := c.SecurityContext
		where := "container " + c.Name + ": "
		if sc == nil {
			p = append(p, where+"no securityContext")
			continue
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot || sc.RunAsNonRoot == nil && !podNonRoot {
			p = append(p, where+"may run as root (runAsNonRoot is not true)")
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			p = append(p, where+"runAsUser 0")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			p = append(p, where+"allowPrivilegeEscalation is not false")
		}
		if sc.Privileged != nil && *sc.Privileged {
			p = append(p, where+"privileged")
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			p = append(p, where+"readOnlyRootFilesystem is not true")
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			p = append(p, where+"capabilities do not drop ALL, or add some")
		}
	}
	return p
}

// TestPodsRunWithoutPrivileges: no manifest has a privilege problem.
func TestPodsRunWithoutPrivileges(t *testing.T) {
	for _, dep := range decodeAll(t).deployments {
		for _, p := range privilegeProblems(dep) {
			t.Errorf("deployment %s: %s", dep.Name, p)
		}
	}
}

// TestPrivilegeCheckCatchesMistakes: each way of granting a privilege in
// the shipped Deployment is reported.
func TestPrivilegeCheckCatchesMistakes(t *testing.T) {
	var dep []byte
	for _, m := range manifests(t) {
		if bytes.Contains(m.raw, []byte("kind: Deployment")) {
			dep = m.raw
		}
	}
	for name, r := range map[string][2]string{
		"root":                 {"runAsNonRoot: true\n            allowPrivilegeEscalation", "runAsNonRoot: false\n            allowPrivilegeEscalation"},
		"privilege escalation": {"allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"},
		"privileged":           {"privileged: false", "privileged: true"},
		"writable root":        {"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"},
		"capability":           {`drop: ["ALL"]`, `drop: ["ALL"]` + "\n              add: [\"NET_ADMIN\"]"},
		"host network":         {"automountServiceAccountToken: false", "automountServiceAccountToken: false\n      hostNetwork: true"},
		"api token":            {"automountServiceAccountToken: false", "automountServiceAccountToken: true"},
	} {
		bad := bytes.Replace(dep, []byte(r[0]), []byte(r[1]), 1)
		if bytes.Equal(bad, dep) {
			t.Fatalf("%s: the mutation did not apply", name)
		}
		obj, err := decodeStrict(bad)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(privilegeProblems(obj.(*appsv1.Deployment))) == 0 {
			t.Errorf("%s: not reported", name)
		}
	}
}

// peerUpFlags returns the flags of `peer up` that docs/flags.md lists
// (generated from the peer's own flag set).
func peerUpFlags(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "flags.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## peer up\n")
	if !ok {
		t.Fatal("docs/flags.md has no peer up section")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)").FindAllStringSubmatch(sec, -1) {
		flags[m[1]] = true
	}
	if len(flags) < 10 {
		t.Fatalf("read only %d peer up flags from docs/flags.md", len(flags))
	}
	return flags
}

// TestPeerSidecar: the keymesh peer runs `up` in userspace mode with flags
// the peer has, its key from a Secret through --key-env, its socket and
// names in mounted volumes, and ConfigMap references that exist.
func TestPeerSidecar(t *testing.T) {
	d := decodeAll(t)
	known := peerUpFlags(t)
	found := 0
	for _, dep := range d.deployments {
		pod := dep.Spec.Template.Spec
		mounts := map[string]bool{}
		for _, c := range allContainers(pod) {
			for _, e := range c.Env {
				if r := e.ValueFrom; r != nil && r.ConfigMapKeyRef != nil {
					cm := d.configMaps[r.ConfigMapKeyRef.Name]
					if _, ok := cm.Data[r.ConfigMapKeyRef.Key]; cm == nil || !ok {
						t.Errorf("container %s: env %s refers to ConfigMap key %s/%s, which the manifests lack", c.Name, e.Name, r.ConfigMapKeyRef.Name, r.ConfigMapKeyRef.Key)
					}
				}
			}
			if !strings.Contains(c.Image, "keymesh-peer") {
				continue
			}
			found++
			for _, m := range c.VolumeMounts {
				mounts[m.MountPath] = true
			}
			if len(c.Args) == 0 || c.Args[0] != "up" {
				t.Fatalf("peer container %s: args %v, want up ...", c.Name, c.Args)
			}
			args := map[string]string{}
			for _, a := range c.Args[1:] {
				name, val, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if !strings.HasPrefix(a, "--") || !known[name] {
					t.Errorf("peer container %s: %q is not a flag of `peer up` (docs/flags.md)", c.Name, a)
				}
				args[name] = val
			}
			if _, ok := args["tun"]; ok {
				t.Errorf("peer container %s: --tun needs CAP_NET_ADMIN; the sidecar runs in userspace mode", c.Name)
			}
			if _, ok := args["key"]; ok {
				t.Errorf("peer container %s: --key names a file; the key comes from a Secret through --key-env", c.Name)
			}
			keyEnv := args["key-env"]
			fromSecret := false
			for _, e := range c.Env {
				if e.Name == keyEnv && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					fromSecret = true
				}
			}
			if keyEnv == "" || !fromSecret {
				t.Errorf("peer container %s: --key-env=%q is not an environment variable filled from a Secret", c.Name, keyEnv)
			}
			for _, f := range []string{"socket", "names-file"} {
				p, ok := args[f]
				if !ok {
					continue
				}
				if !underMount(p, mounts) {
					t.Errorf("peer container %s: --%s=%s is not under a mounted volume (the root filesystem is read-only)", c.Name, f, p)
				}
			}
		}
	}
	if found == 0 {
		t.Fatal("no keymesh-peer container in the manifests")
	}
}

func underMount(path string, mounts map[string]bool) bool {
	for m := range mounts {
		if strings.HasPrefix(path, strings.TrimSuffix(m, "/")+"/") {
			return true
		}
	}
	return false
}
