# syntax=docker/dockerfile:1
# Build a static binary, then ship it alone on an empty base: no shell, non-root.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/vivi-bridge ./cmd/vivi-bridge

FROM scratch
# CA roots for the Twilio REST API, OpenAI and rediss://.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/vivi-bridge /vivi-bridge
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/vivi-bridge"]
CMD ["serve"]
