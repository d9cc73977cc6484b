# Ember's layers. Each folder is one static library that links only to the
# layers below it, and the build checks that no file of the folder includes
# a header of a layer it does not use (tools/check_layers.py): an include
# that climbs a layer stops the build, and a layer's tests link against
# that layer alone, so a call that climbs one fails to link.
#
#   ember_layer(NAME DIR SOURCES a.cc... USES lower...
#               [TESTS a_test.cc...] [TEST_SUPPORT lib...] [TEST_LABELS label...])
#
# makes ember_NAME from DIR/SOURCES and, with TESTS, ember_NAME_tests, whose
# tests get TEST_LABELS as ctest labels (kvm: some boot test guests, so
# tools/devtool test-emulated runs them where the host has no KVM).

function(ember_layer name dir)
  cmake_parse_arguments(L "" "" "SOURCES;USES;TESTS;TEST_SUPPORT;TEST_LABELS" ${ARGN})
  # The folders this layer may include: its own and, transitively, those of
  # the layers it uses.
  set(may_use)
  foreach(use IN LISTS L_USES)
    get_property(dirs GLOBAL PROPERTY EMBER_LAYER_DIRS_${use})
    if(NOT dirs)
      message(FATAL_ERROR "layer ${name} uses ${use}, which is not defined below it")
    endif()
    list(APPEND may_use ${dirs})
  endforeach()
  list(REMOVE_DUPLICATES may_use)
  set_property(GLOBAL PROPERTY EMBER_LAYER_DIRS_${name} ${dir} ${may_use})

  file(GLOB_RECURSE files CONFIGURE_DEPENDS
       ${CMAKE_SOURCE_DIR}/${dir}/*.h ${CMAKE_SOURCE_DIR}/${dir}/*.cc)
  set(stamp ${CMAKE_BINARY_DIR}/layers/${name}.ok)
  add_custom_command(OUTPUT ${stamp}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/layers
    COMMAND python3 ${CMAKE_SOURCE_DIR}/tools/check_layers.py --stamp ${stamp}
            --root ${CMAKE_SOURCE_DIR} --layer ${dir} --may-use ${may_use} -- ${files}
    DEPENDS ${files} ${CMAKE_SOURCE_DIR}/tools/check_layers.py
    COMMENT "Checking that ${dir} includes only ${may_use}")
  add_custom_target(ember_${name}_layer DEPENDS ${stamp})

  list(TRANSFORM L_SOURCES PREPEND ${CMAKE_SOURCE_DIR}/${dir}/)
  add_library(ember_${name} STATIC ${L_SOURCES})
  add_dependencies(ember_${name} ember_${name}_layer)
  target_include_directories(ember_${name} PUBLIC ${CMAKE_SOURCE_DIR})
  list(TRANSFORM L_USES PREPEND ember_)
  target_link_libraries(ember_${name} PUBLIC ${L_USES})

  if(L_TESTS AND NOT EMBER_FUZZ)
    list(TRANSFORM L_TESTS PREPEND ${CMAKE_SOURCE_DIR}/${dir}/)
    add_executable(ember_${name}_tests ${L_TESTS})
    target_link_libraries(ember_${name}_tests PRIVATE ember_${name} ${L_TEST_SUPPORT}
                          GTest::gtest GTest::gtest_main)
    target_compile_definitions(ember_${name}_tests PRIVATE
                               EMBER_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
    if(L_TEST_LABELS)
      gtest_discover_tests(ember_${name}_tests DISCOVERY_TIMEOUT 60
                           PROPERTIES LABELS "${L_TEST_LABELS}")
    else()
      gtest_discover_tests(ember_${name}_tests DISCOVERY_TIMEOUT 60)
    endif()
  endif()
endfunction()
