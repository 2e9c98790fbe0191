# Sourced by build/consumer-check.sh and build/tool-check.sh: a fresh NuGet package cache for a check.
# fresh_package_cache DIR EMPTY: makes DIR a package cache without any QatMl package, so QatMl's packages are
# restored from the check's local feed and never from an earlier pack of the same version in the global cache.
# With EMPTY=0 it links every other package id (ONNX Runtime, libtorch, ML.NET: about 1.9 GB) from this machine's
# global cache, one symbolic link per id, so nothing is downloaded again; with EMPTY=1 it stays empty (a fresh machine).
# Prints one line saying which it made.
fresh_package_cache() {
  local dir=$1 empty=$2 global id linked=0
  global=$(dotnet nuget locals global-packages --list | sed -n 's/^global-packages: *//p')
  global=${global%/}
  mkdir -p "$dir"
  if (( empty )) || [[ ! -d "$global" ]]; then
    echo "fresh package cache $dir: empty"
    return
  fi
  for id in "$global"/*/; do
    id=$(basename "$id")
    [[ "$id" == qatml.* ]] && continue
    ln -s "$global/$id" "$dir/$id"
    linked=$((linked + 1))
  done
  echo "fresh package cache $dir: no QatMl package; $linked other package ids linked from $global"
}
