package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// externalClaims are PersistentVolumeClaims the manifests use but do not
// define: the master's tree belongs to the application that writes it.
var externalClaims = []string{"app-data"}

// object is one decoded manifest document.
type object struct {
	where string // file:document, for messages
	kind  string
	name  string
	meta  metav1.ObjectMeta
	value any // *corev1.Secret, *corev1.Service, ...
}

// decodeDocuments decodes every document of one manifest file into the
// k8s.io/api type its apiVersion and kind name, strictly: an unknown or
// misspelt field is an error, as the API server's strict field validation
// would report it.
func decodeDocuments(file string, data []byte) ([]object, error) {
	var objs []object
	for i, doc := range splitDocuments(data) {
		where := fmt.Sprintf("%s:document %d", file, i+1)
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		var v any
		switch tm.APIVersion + "/" + tm.Kind {
		case "v1/Secret":
			v = &corev1.Secret{}
		case "v1/Service":
			v = &corev1.Service{}
		case "v1/PersistentVolumeClaim":
			v = &corev1.PersistentVolumeClaim{}
		case "apps/v1/StatefulSet":
			v = &appsv1.StatefulSet{}
		case "apps/v1/Deployment":
			v = &appsv1.Deployment{}
		default:
			return nil, fmt.Errorf("%s: kind %q of apiVersion %q is not one this check knows (Secret, Service, PersistentVolumeClaim, StatefulSet, Deployment)", where, tm.Kind, tm.APIVersion)
		}
		if err := yaml.UnmarshalStrict(doc, v); err != nil {
			return nil, fmt.Errorf("%s: %s %w", where, tm.Kind, err)
		}
		var meta metav1.ObjectMeta
		switch o := v.(type) {
		case *corev1.Secret:
			meta = o.ObjectMeta
		case *corev1.Service:
			meta = o.ObjectMeta
		case *corev1.PersistentVolumeClaim:
			meta = o.ObjectMeta
		case *appsv1.StatefulSet:
			meta = o.ObjectMeta
		case *appsv1.Deployment:
			meta = o.ObjectMeta
		}
		objs = append(objs, object{where: where, kind: tm.Kind, name: meta.Name, meta: meta, value: v})
	}
	return objs, nil
}

// splitDocuments splits a YAML stream on "---" lines and drops documents
// that hold only comments or blanks.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		for line := range strings.SplitSeq(cur.String(), "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, bytes.Clone(cur.Bytes()))
				break
			}
		}
		cur.Reset()
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.TrimRight(line, " \t\r") == "---" {
			flush()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

// workload is what the checks need from a StatefulSet or a Deployment.
type workload struct {
	obj      object
	selector *metav1.LabelSelector
	template corev1.PodTemplateSpec
	claims   []corev1.PersistentVolumeClaim // volumeClaimTemplates
}

// checkManifests checks what a schema cannot: that the objects of a set of
// manifests fit together, and the rules georep's deployments keep.
func checkManifests(objs []object) []error {
	var errs []error
	fail := func(o object, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s %s: %s", o.where, o.kind, o.name, fmt.Sprintf(format, args...)))
	}
	secrets := map[string]*corev1.Secret{}
	claims := map[string]bool{}
	for _, c := range externalClaims {
		claims[c] = true
	}
	var services []object
	var workloads []workload
	for _, o := range objs {
		if o.name == "" {
			fail(o, "metadata.name is empty")
		}
		if o.meta.Labels["app.kubernetes.io/name"] == "" {
			fail(o, "no app.kubernetes.io/name label")
		}
		switch v := o.value.(type) {
		case *corev1.Secret:
			secrets[o.name] = v
		case *corev1.PersistentVolumeClaim:
			claims[o.name] = true
		case *corev1.Service:
			services = append(services, o)
		case *appsv1.StatefulSet:
			workloads = append(workloads, workload{obj: o, selector: v.Spec.Selector, template: v.Spec.Template, claims: v.Spec.VolumeClaimTemplates})
		case *appsv1.Deployment:
			workloads = append(workloads, workload{obj: o, selector: v.Spec.Selector, template: v.Spec.Template})
		}
	}

	for _, w := range workloads {
		o, pod := w.obj, w.template.Spec
		if w.selector == nil || len(w.selector.MatchLabels) == 0 {
			fail(o, "no spec.selector.matchLabels")
		} else if !labelsMatch(w.selector.MatchLabels, w.template.Labels) {
			fail(o, "spec.selector.matchLabels %v do not select the pod template's labels %v", w.selector.MatchLabels, w.template.Labels)
		}
		if ss, ok := o.value.(*appsv1.StatefulSet); ok {
			if !slices.ContainsFunc(services, func(s object) bool {
				svc := s.value.(*corev1.Service)
				return s.name == ss.Spec.ServiceName && svc.Spec.ClusterIP == corev1.ClusterIPNone
			}) {
				fail(o, "spec.serviceName %q is not a headless Service of these manifests", ss.Spec.ServiceName)
			}
		}

		volumes := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			volumes[v.Name] = v
			switch {
			case v.Secret != nil && secrets[v.Secret.SecretName] == nil:
				fail(o, "volume %q mounts Secret %q, which these manifests do not define", v.Name, v.Secret.SecretName)
			case v.PersistentVolumeClaim != nil && !claims[v.PersistentVolumeClaim.ClaimName]:
				fail(o, "volume %q uses PersistentVolumeClaim %q, which these manifests do not define", v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
		for _, c := range w.claims {
			volumes[c.Name] = corev1.Volume{Name: c.Name}
		}

		if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			fail(o, "the pod's securityContext does not set runAsNonRoot: true")
		}
		for _, c := range pod.Containers {
			if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				fail(o, "container %q does not set allowPrivilegeEscalation: false", c.Name)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
				fail(o, "container %q has no cpu and memory requests", c.Name)
			}
			mtls := slices.ContainsFunc(c.Args, func(a string) bool { return a == "--cert" || strings.HasPrefix(a, "--cert=") })
			for _, p := range []struct {
				name  string
				probe *corev1.Probe
			}{{"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}} {
				if p.probe == nil {
					fail(o, "container %q has no %s", c.Name, p.name)
					continue
				}
				h := p.probe.ProbeHandler
				switch {
				case h.GRPC != nil && mtls:
					fail(o, "container %q: %s is a grpc probe on an mTLS server; the kubelet presents no client certificate, so it can never pass (use tcpSocket)", c.Name, p.name)
				case h.TCPSocket != nil && !hasPort(c, h.TCPSocket.Port.String()):
					fail(o, "container %q: %s port %s is not a container port", c.Name, p.name, h.TCPSocket.Port.String())
				case h.HTTPGet != nil && !hasPort(c, h.HTTPGet.Port.String()):
					fail(o, "container %q: %s port %s is not a container port", c.Name, p.name, h.HTTPGet.Port.String())
				}
			}

			mounts := map[string]corev1.VolumeMount{}
			for _, m := range c.VolumeMounts {
				v, ok := volumes[m.Name]
				if !ok {
					fail(o, "container %q mounts volume %q, which the pod does not have", c.Name, m.Name)
					continue
				}
				if v.Secret != nil && !m.ReadOnly {
					fail(o, "container %q mounts Secret volume %q read-write", c.Name, m.Name)
				}
				mounts[m.MountPath] = m
			}
			for _, a := range c.Args {
				p := a
				if _, val, ok := strings.Cut(a, "="); ok && strings.HasPrefix(a, "--") {
					p = val
				}
				if !strings.HasPrefix(p, "/") {
					continue
				}
				m, ok := mountOf(mounts, p)
				if !ok {
					fail(o, "container %q: argument %q names a path under no volume mount", c.Name, a)
					continue
				}
				if v := volumes[m.Name]; v.Secret != nil && p != m.MountPath {
					rel := strings.TrimPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")
					s := secrets[v.Secret.SecretName]
					if s == nil {
						continue // reported above
					}
					_, inData := s.Data[rel]
					_, inString := s.StringData[rel]
					if !inData && !inString {
						fail(o, "container %q: argument %q names %q, which Secret %q has no key for", c.Name, a, rel, s.Name)
					}
				}
			}
		}
	}

	for _, s := range services {
		svc := s.value.(*corev1.Service)
		if len(svc.Spec.Selector) == 0 {
			fail(s, "no spec.selector")
			continue
		}
		i := slices.IndexFunc(workloads, func(w workload) bool { return labelsMatch(svc.Spec.Selector, w.template.Labels) })
		if i < 0 {
			fail(s, "spec.selector %v selects no pod template of these manifests", svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort.String()
			if target == "0" || target == "" {
				target = fmt.Sprint(p.Port)
			}
			if !slices.ContainsFunc(workloads[i].template.Spec.Containers, func(c corev1.Container) bool { return hasPort(c, target) }) {
				fail(s, "port %q targets %s, which no container of %s %s exposes", p.Name, target, workloads[i].obj.kind, workloads[i].obj.name)
			}
		}
	}
	return errs
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// hasPort reports whether port (a name or a number) is one of c's ports.
func hasPort(c corev1.Container, port string) bool {
	return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
		return p.Name == port || fmt.Sprint(p.ContainerPort) == port
	})
}

// mountOf returns the mount that holds path p: the longest mount path that
// is p or one of its parents.
func mountOf(mounts map[string]corev1.VolumeMount, p string) (corev1.VolumeMount, bool) {
	p = path.Clean(p)
	for dir := p; ; dir = path.Dir(dir) {
		if m, ok := mounts[dir]; ok {
			return m, true
		}
		if dir == "/" {
			return corev1.VolumeMount{}, false
		}
	}
}

// loadManifests decodes every document of every k8s/*.yaml file.
func loadManifests(t *testing.T, files map[string][]byte) ([]object, error) {
	t.Helper()
	var all []object
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		objs, err := decodeDocuments(n, files[n])
		if err != nil {
			return nil, err
		}
		all = append(all, objs...)
	}
	return all, nil
}

func readManifests(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in k8s/ (glob error: %v)", err)
	}
	files := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = b
	}
	return files
}

// TestKubernetesManifests decodes the shipped manifests into the official
// API types and checks that they fit together.
func TestKubernetesManifests(t *testing.T) {
	objs, err := loadManifests(t, readManifests(t))
	if err != nil {
		t.Fatal(err)
	}
	if errs := checkManifests(objs); len(errs) > 0 {
		t.Fatalf("manifest problems:\n%v", errors.Join(errs...))
	}
	want := []string{
		"Secret georep-slave-tls", "Service georep-slave", "Service georep-slave-headless", "StatefulSet georep-slave",
		"Secret georep-master-tls", "PersistentVolumeClaim georep-master-state", "Deployment georep-master",
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.kind+" "+o.name)
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("manifests lack %s; they hold %v", w, got)
		}
	}
}

// TestManifestChecksCatchMistakes breaks the shipped manifests one way at a
// time and expects the checks to say so, so a passing TestKubernetesManifests
// means something.
func TestManifestChecksCatchMistakes(t *testing.T) {
	tests := []struct {
		name, file, old, new, want string
	}{
		{"unknown field", "slave.yaml", "  serviceName:", "  serviceNme:", `unknown field "serviceNme"`},
		{"bad quantity", "slave.yaml", "storage: 10Gi", "storage: ten", "quantities must match"},
		{"unknown kind", "slave.yaml", "kind: StatefulSet", "kind: StatefulSett", `kind "StatefulSett"`},
		{"selector misses the template", "master.yaml", "    matchLabels:\n      app.kubernetes.io/name: georep-master", "    matchLabels:\n      app.kubernetes.io/name: georep-mastr", "do not select"},
		{"service selects nothing", "slave.yaml", "  type: ClusterIP\n  selector:\n    app.kubernetes.io/name: georep-slave", "  type: ClusterIP\n  selector:\n    app.kubernetes.io/name: nobody", "selects no pod template"},
		{"service targets a missing port", "slave.yaml", "      port: 7070\n      targetPort: grpcs\n      protocol: TCP\n---\n# The", "      port: 7070\n      targetPort: grpc\n      protocol: TCP\n---\n# The", "targets grpc"},
		{"argument names a missing secret key", "slave.yaml", "--cert=/etc/georep/tls/server.crt", "--cert=/etc/georep/tls/tls.crt", `names "tls.crt"`},
		{"argument outside every mount", "slave.yaml", "--root=/srv/georep/replica", "--root=/srv/other", "under no volume mount"},
		{"undefined secret", "master.yaml", "secretName: georep-master-tls", "secretName: georep-tls", `Secret "georep-tls"`},
		{"undefined claim", "master.yaml", "claimName: georep-master-state", "claimName: georep-state", `PersistentVolumeClaim "georep-state"`},
		{"runs as root", "master.yaml", "runAsNonRoot: true", "runAsNonRoot: false", "runAsNonRoot"},
		{"grpc probe on mTLS", "slave.yaml", "          readinessProbe:\n            tcpSocket:\n              port: grpcs", "          readinessProbe:\n            grpc:\n              port: 7070", "grpc probe on an mTLS server"},
		{"no requests", "master.yaml", "              cpu: 250m\n              memory: 256Mi\n", "", "no cpu and memory requests"},
		{"secret mounted read-write", "slave.yaml", "              mountPath: /etc/georep/tls\n              readOnly: true", "              mountPath: /etc/georep/tls", "read-write"},
		{"no headless service", "slave.yaml", "serviceName: georep-slave-headless", "serviceName: georep-slave", "not a headless Service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := readManifests(t)
			key := filepath.Join("k8s", tt.file)
			orig := string(files[key])
			if !strings.Contains(orig, tt.old) {
				t.Fatalf("%s no longer contains %q; update this case", key, tt.old)
			}
			files[key] = []byte(strings.Replace(orig, tt.old, tt.new, 1))
			objs, err := loadManifests(t, files)
			if err == nil {
				err = errors.Join(checkManifests(objs)...)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
