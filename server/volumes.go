package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/georep/georep/proto/georep/v1"
)

// VolumeHeader is the gRPC metadata key a master names the slave root it
// wants with, when one daemon serves several (the NAME of
// grpcs://host:port/NAME). gRPC metadata keys are lower case.
const VolumeHeader = "georep-volume"

// Volumes is the Slave service of a daemon that serves one or more slave
// roots by name: each call is routed to the Service of the volume named by
// its VolumeHeader metadata. Each volume has its own Service, so its own
// backend, keep-alive counter and foreign marks: two masters replicating to
// two volumes never see each other.
type Volumes struct {
	pb.UnimplementedSlaveServer

	byName map[string]*Service
	// names is sorted, for error messages that list what is served.
	names []string
}

var _ pb.SlaveServer = (*Volumes)(nil)

// NewVolumes routes to the services in byName. The name "" is the unnamed
// root of a daemon started with --root alone; it must then be the only one,
// because a master that names no volume could not tell it from the others.
func NewVolumes(byName map[string]*Service) (*Volumes, error) {
	if len(byName) == 0 {
		return nil, errors.New("no slave root to serve: pass --root DIR or --volume NAME=DIR")
	}
	v := &Volumes{byName: make(map[string]*Service, len(byName))}
	for name, svc := range byName {
		if svc == nil {
			return nil, fmt.Errorf("volume %q has no service", name)
		}
		if name == "" {
			if len(byName) > 1 {
				return nil, errors.New("an unnamed root cannot be served beside named volumes: name every root")
			}
		} else if err := CheckVolumeName(name); err != nil {
			return nil, err
		}
		v.byName[name] = svc
		v.names = append(v.names, name)
	}
	slices.Sort(v.names)
	return v, nil
}

// CheckVolumeName accepts the volume names a slave URL can carry (the
// client's URL parser applies the same rule): letters, digits, '.', '-' and
// '_', not "." or "..", not starting with '-'.
func CheckVolumeName(name string) error {
	if name == "" {
		return errors.New("a volume name is empty")
	}
	if name == "." || name == ".." || name[0] == '-' {
		return fmt.Errorf("volume name %q is not allowed: it must not be . or .. or start with '-'", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("volume name %q may contain only letters, digits, '.', '-' and '_'", name)
		}
	}
	return nil
}

// Names returns the served volume names, sorted ("" for an unnamed root).
func (v *Volumes) Names() []string { return slices.Clone(v.names) }

// Service returns the Service of the volume the call in ctx names.
func (v *Volumes) Service(ctx context.Context) (*Service, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(VolumeHeader)
	switch {
	case len(vals) > 1:
		return nil, status.Errorf(codes.InvalidArgument, "the call names %d volumes in %s metadata; name one", len(vals), VolumeHeader)
	case len(vals) == 0 || vals[0] == "":
		if len(v.names) == 1 {
			return v.byName[v.names[0]], nil
		}
		return nil, status.Errorf(codes.InvalidArgument,
			"this slave serves several volumes (%s): name one in the slave URL, grpcs://host:port/NAME (or with the %s metadata)",
			strings.Join(v.names, ", "), VolumeHeader)
	}
	name := vals[0]
	if svc, ok := v.byName[name]; ok && name != "" {
		return svc, nil
	}
	if _, unnamed := v.byName[""]; unnamed {
		return nil, status.Errorf(codes.NotFound,
			"this slave serves one unnamed root, not volume %q: drop /%s from the slave URL, or serve it with --volume %s=DIR",
			name, name, name)
	}
	return nil, status.Errorf(codes.NotFound, "this slave serves no volume %q; it serves: %s", name, strings.Join(v.names, ", "))
}

// route runs one call on the Service its metadata names.
func route[Req, Resp any](ctx context.Context, v *Volumes, req Req, call func(*Service, context.Context, Req) (Resp, error)) (Resp, error) {
	svc, err := v.Service(ctx)
	if err != nil {
		var zero Resp
		return zero, err
	}
	return call(svc, ctx, req)
}

// Handshake routes to the named volume's Service.
func (v *Volumes) Handshake(ctx context.Context, req *pb.HandshakeRequest) (*pb.HandshakeResponse, error) {
	return route(ctx, v, req, (*Service).Handshake)
}

// EntryOps routes to the named volume's Service.
func (v *Volumes) EntryOps(ctx context.Context, req *pb.EntryOpsRequest) (*pb.EntryOpsResponse, error) {
	return route(ctx, v, req, (*Service).EntryOps)
}

// MetaOps routes to the named volume's Service.
func (v *Volumes) MetaOps(ctx context.Context, req *pb.MetaOpsRequest) (*pb.MetaOpsResponse, error) {
	return route(ctx, v, req, (*Service).MetaOps)
}

// Stime routes to the named volume's Service.
func (v *Volumes) Stime(ctx context.Context, req *pb.StimeRequest) (*pb.StimeResponse, error) {
	return route(ctx, v, req, (*Service).Stime)
}

// SetStime routes to the named volume's Service.
func (v *Volumes) SetStime(ctx context.Context, req *pb.SetStimeRequest) (*pb.SetStimeResponse, error) {
	return route(ctx, v, req, (*Service).SetStime)
}

// Xtime routes to the named volume's Service.
func (v *Volumes) Xtime(ctx context.Context, req *pb.XtimeRequest) (*pb.XtimeResponse, error) {
	return route(ctx, v, req, (*Service).Xtime)
}

// SetXtime routes to the named volume's Service.
func (v *Volumes) SetXtime(ctx context.Context, req *pb.SetXtimeRequest) (*pb.SetXtimeResponse, error) {
	return route(ctx, v, req, (*Service).SetXtime)
}

// KeepAlive routes to the named volume's Service.
func (v *Volumes) KeepAlive(ctx context.Context, req *pb.KeepAliveRequest) (*pb.KeepAliveResponse, error) {
	return route(ctx, v, req, (*Service).KeepAlive)
}

// VolumeInfo routes to the named volume's Service.
func (v *Volumes) VolumeInfo(ctx context.Context, req *pb.VolumeInfoRequest) (*pb.VolumeInfoResponse, error) {
	return route(ctx, v, req, (*Service).VolumeInfo)
}

// Entries routes to the named volume's Service.
func (v *Volumes) Entries(ctx context.Context, req *pb.EntriesRequest) (*pb.EntriesResponse, error) {
	return route(ctx, v, req, (*Service).Entries)
}

// Lstat routes to the named volume's Service.
func (v *Volumes) Lstat(ctx context.Context, req *pb.LstatRequest) (*pb.LstatResponse, error) {
	return route(ctx, v, req, (*Service).Lstat)
}

// Gfid routes to the named volume's Service.
func (v *Volumes) Gfid(ctx context.Context, req *pb.GfidRequest) (*pb.GfidResponse, error) {
	return route(ctx, v, req, (*Service).Gfid)
}

// Purge routes to the named volume's Service.
func (v *Volumes) Purge(ctx context.Context, req *pb.PurgeRequest) (*pb.PurgeResponse, error) {
	return route(ctx, v, req, (*Service).Purge)
}

// BlockSums routes to the named volume's Service.
func (v *Volumes) BlockSums(ctx context.Context, req *pb.BlockSumsRequest) (*pb.BlockSumsResponse, error) {
	return route(ctx, v, req, (*Service).BlockSums)
}

// PutFiles routes the stream to the named volume's Service.
func (v *Volumes) PutFiles(stream pb.Slave_PutFilesServer) error {
	svc, err := v.Service(stream.Context())
	if err != nil {
		return err
	}
	return svc.PutFiles(stream)
}
