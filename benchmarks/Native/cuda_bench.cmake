# The GPU benchmark (CUDA builds; no Google Benchmark or .NET needed): included from src/Native/CMakeLists.txt.
add_executable(qatml_cuda_bench ${CMAKE_CURRENT_LIST_DIR}/cuda_bench.cpp)
target_link_libraries(qatml_cuda_bench PRIVATE qatml_native qatml_cuda_kernels)
