# Allocation-failure injection (STYLE.md habit 8, SQLite's fault
# simulation; README.md, "Allocation failures"): one test per module, in
# which the n-th allocation fails for n = 1, 2, ... until a run meets no
# failure, in transient and in persistent mode. The executables are linked
# through the failalloc wrappers (tests/support/failalloc.h); the ASAN
# build adds LeakSanitizer's check to the shim's own count of live blocks.
#
# cachesvc_alloc_test(<module> <sources and libraries>...): the test
# <module>_unit_alloc_fail runs tests/unit/test_<module>_alloc.c, built
# with the sources (paths ending in .c) and linked with the libraries
# given.
function(cachesvc_alloc_test module)
  set(srcs)
  set(libs)
  foreach(a ${ARGN})
    if(a MATCHES "\\.c$")
      list(APPEND srcs ${a})
    else()
      list(APPEND libs ${a})
    endif()
  endforeach()
  add_executable(test_${module}_alloc ${CMAKE_SOURCE_DIR}/tests/unit/test_${module}_alloc.c ${srcs})
  target_link_libraries(test_${module}_alloc PRIVATE failalloc ${libs} PkgConfig::CMOCKA)
  add_test(NAME ${module}_unit_alloc_fail COMMAND test_${module}_alloc)
  set_tests_properties(${module}_unit_alloc_fail PROPERTIES LABELS unit TIMEOUT 60)
endfunction()

if(NOT FUZZ)
  # kit/buf.c and kit/metrics.c.
  cachesvc_alloc_test(kit kit)
  # localcache/: lc_new, and every other call (which must allocate nothing).
  cachesvc_alloc_test(localcache lc)
  # api/: the read buffer, parsing, JSON bodies, handlers and responses
  # (http_core), over the in-memory service.
  cachesvc_alloc_test(api http_core memservice)
  # cachesvc/store/: the decision rules and the sold-out sets (soldout.c is
  # included by the test), on the runtime stand-in and a fake backend.
  cachesvc_alloc_test(store ${CMAKE_SOURCE_DIR}/cachesvc/store/decide.c
    ${CMAKE_SOURCE_DIR}/tests/support/store_rtstub.c kit Threads::Threads)
endif()
