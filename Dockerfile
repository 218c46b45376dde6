# reconciler: multi-stage build. Stage 1 builds the pinned kustomize, stage 2 builds the wheel, the final
# stage is a slim Python with git, the wheel and kustomize, running as UID 1000 with no compilers.

FROM golang:1.26-bookworm AS kustomize
ARG KUSTOMIZE_VERSION=v5.8.1
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
RUN go install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"

FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# git is the only system package: Debian security updates come with the base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 reconciler \
    && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin reconciler
COPY --from=kustomize /go/bin/kustomize /usr/local/bin/kustomize
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 RECONCILER_KUSTOMIZE=/usr/local/bin/kustomize HOME=/tmp
USER 1000:1000
EXPOSE 8080
ENTRYPOINT ["reconciler", "run"]
CMD ["--config", "/etc/reconciler/config/config.yaml"]
